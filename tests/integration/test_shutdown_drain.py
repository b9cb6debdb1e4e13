"""Shutdown never aborts a request that may already have rotated, and never waits for a
database that is away (issue 10 part 6; SPEC §6). The drain waits for each request in
flight up to its own request_timeout, even past shutdown_timeout: the provider's answer may
be the only copy of a new refresh token. With the database down and nothing in flight, a
stop exits at once: every rotated result it holds is in the spool, and the next start
writes it."""

import glob
import os
import signal
import time

from lib.daemon import wait_until


def spool_files(env, pattern="seg-*.spool"):
    return glob.glob(os.path.join(env.state_dir, "spool", pattern))


def assert_fresh(seeder, server, accts):
    for a in accts:
        row = seeder.read(a.id)
        assert row["refresh_token"] == server.current_refresh_token(a.account_key), (
            f"account {a.id}: the stored refresh token is not the one the provider holds valid")


def test_sigterm_waits_for_a_request_in_flight_beyond_shutdown_timeout(
        migrated_env, seeder, token_server):
    migrated_env.write_config({"refresh": {"request_timeout": "6s", "scan_interval": "1h"},
                               "daemon": {"shutdown_timeout": "2s"}})
    a = seeder.add_account("github", expires_in=-60)  # github rotates on every refresh
    token_server.hold()
    d = migrated_env.daemon("drain")
    d.start()
    try:
        wait_until(lambda: token_server.in_flight() == 1, timeout=20,
                   message="the request held at the token server")
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        time.sleep(3)  # past shutdown_timeout, within request_timeout
        assert d.running(), f"the daemon gave up a request still within its timeout\n" \
                            f"{d.log_tail()}"
    finally:
        token_server.release()
    rc = d.wait(timeout=30)
    took = time.monotonic() - t0
    assert rc == 0, d.log_tail()
    assert took < 6 + 5, f"the drain took {took:.1f}s"
    assert token_server.refresh_count(a.account_key) == 1, "the provider rotated once"
    assert_fresh(seeder, token_server, [a])
    assert spool_files(migrated_env) == [], "written, so nothing left in the spool"


def test_sigterm_during_a_database_outage_exits_at_once_and_the_spool_keeps_the_results(
        migrated_env, seeder, token_server, pg_cluster):
    accts = seeder.add_accounts(5, "github", expires_in=-60)
    migrated_env.write_config({"refresh": {"request_timeout": "10s", "scan_interval": "1h"},
                               "daemon": {"shutdown_timeout": "15s"}})
    token_server.hold()
    d = migrated_env.daemon("outage")
    d.start()
    try:
        wait_until(lambda: token_server.in_flight() == 5, timeout=20,
                   message="5 requests held at the token server")
        pg_cluster.stop(mode="fast")
        token_server.release()
        wait_until(lambda: all(token_server.refresh_count(a.account_key) == 1 for a in accts),
                   timeout=20, message="every account rotated by the provider")
        wait_until(lambda: len(spool_files(migrated_env)) >= 1, timeout=10,
                   message="the rotated results spooled")
        d.wait_for_log(r"database connection lost|cannot connect", timeout=10)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc = d.wait(timeout=30)
        took = time.monotonic() - t0
        assert rc == 0, d.log_tail()
        assert took < 3, f"a stop during an outage must not wait for the database " \
                         f"(shutdown_timeout 15s); it took {took:.1f}s\n{d.log_tail()}"
        assert spool_files(migrated_env), "the spool must survive the exit"
    finally:
        token_server.release()
        if not pg_cluster.running:
            pg_cluster.start()

    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert "replaying 5 spooled results" in log, log
    assert_fresh(seeder, token_server, accts)
    for a in accts:
        assert token_server.refresh_count(a.account_key) == 1, "no account refreshed twice"
    assert spool_files(migrated_env) == [], "settled segments are removed"


def test_exit_status_is_1_and_the_log_names_accounts_whose_rotated_token_was_lost(
        migrated_env, seeder, token_server, pg_cluster):
    a = seeder.add_account("github", expires_in=-60)
    migrated_env.write_config({"refresh": {"request_timeout": "10s", "scan_interval": "1h"},
                               "daemon": {"shutdown_timeout": "15s"}})
    token_server.hold()
    d = migrated_env.daemon("lost")
    d.start()
    spool = os.path.join(migrated_env.state_dir, "spool")
    try:
        wait_until(lambda: token_server.in_flight() == 1, timeout=20,
                   message="the request held at the token server")
        pg_cluster.stop(mode="fast")
        # The spool directory is replaced by a file: no segment can be written any more.
        os.rename(spool, spool + ".moved")
        with open(spool, "w") as f:
            f.write("not a directory\n")
        token_server.release()
        wait_until(lambda: token_server.refresh_count(a.account_key) == 1, timeout=20,
                   message="the provider rotated")
        d.wait_for_log(r"could not be made durable", timeout=10)
        d.send_signal(signal.SIGTERM)
        rc = d.wait(timeout=30)
        assert rc == 1, f"a lost rotated token must make the exit status 1, saw {rc}\n" \
                        f"{d.log_tail()}"
        assert f"account {a.id} (github): its rotated refresh token could be neither written " \
               f"nor spooled" in d.log(), d.log_tail()
    finally:
        token_server.release()
        if os.path.isfile(spool):
            os.unlink(spool)
            os.rename(spool + ".moved", spool)
        if not pg_cluster.running:
            pg_cluster.start()
