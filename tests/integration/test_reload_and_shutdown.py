"""SIGHUP reload and SIGTERM drain (SPEC §3, §6; issue 4 "SIGHUP reload", "SIGTERM /
SIGINT"): a reload re-reads the config and every secret, validates it whole and applies it
to new work only; a shutdown stops claiming, finishes what is in flight (bounded), writes
every result, gives back the claims it never sent, and exits 0."""

import re
import signal
import time

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from lib.daemon import wait_until
from lib.seed import FernetKeys


def lease_of(db, account_id):
    rows = db.execute("SELECT lease_owner, lease_until, attempts, last_error "
                      "FROM oauth_refreshd.account_state WHERE account_id = %s", (account_id,))
    return dict(zip(("lease_owner", "lease_until", "attempts", "last_error"), rows[0]))


def continuous(env, overrides=None, name="continuous"):
    if overrides:
        env.write_config(overrides)
    d = env.daemon(name)
    d.start()
    d.wait_for_log("ready: connected", timeout=30)
    return d


def reload(d, pattern=r"configuration reload(ed| failed)"):
    size = d.log_size()
    d.send_signal(signal.SIGHUP)
    return d.wait_for_log(pattern, timeout=10, after=size)


def max_overlap(records):
    """The largest number of requests the server had open at once."""
    edges = sorted([(r.start, 1) for r in records] + [(r.end or 1e18, -1) for r in records],
                   key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, step in edges:
        cur += step
        best = max(best, cur)
    return best


# ---- reload --------------------------------------------------------------------------------

def test_reload_rereads_the_client_secret_file_for_new_requests(
        migrated_env, seeder, token_server, events):
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"}})
    new = ("test-google-client", "rotated-google-secret-for-reload-test")
    token_server.clients["google"] = new
    migrated_env.clients["google"] = new
    migrated_env.write_config({"refresh": {"scan_interval": "1h"}})  # rewrites google.secret

    before = seeder.add_account("google", expires_in=-60)
    wait_until(lambda: token_server.requests_for(before.account_key), timeout=15,
               message="a request before the reload")
    assert token_server.requests_for(before.account_key)[0].client_ok is False, (
        "without SIGHUP the daemon must still use the secret it read at start")
    d.wait_for_log(r"rejects our client credentials", timeout=10)

    reload(d, r"configuration reloaded")
    after = seeder.add_account("google", expires_in=-60)
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == after.id, timeout=15)
    assert token_server.requests_for(after.account_key)[-1].client_ok is True
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_reload_applies_new_limits_and_lead_time_to_new_work(
        migrated_env, seeder, token_server, events):
    token_server.delay_ms = 400
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"},
                                  "provider.google": {"max_in_flight": 1}})
    first = seeder.add_accounts(4, "google", expires_in=-60)
    wait_until(lambda: len(events.events_for(event="refreshed")) >= 4, timeout=30,
               message="the first four refreshed")
    seen = [r for a in first for r in token_server.requests_for(a.account_key)]
    assert max_overlap(seen) == 1, f"max_in_flight=1: saw {max_overlap(seen)} at once"

    soon = seeder.add_account("github", expires_in=20 * 60)  # outside the 5 min lead time
    time.sleep(1.0)
    assert token_server.requests_for(soon.account_key) == [], "not due under lead_time = 5min"

    migrated_env.write_config({"refresh": {"scan_interval": "1h", "lead_time": "30min"},
                               "provider.google": {"max_in_flight": 4}})
    reload(d, r"configuration reloaded")
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == soon.id, timeout=15)
    second = seeder.add_accounts(4, "google", expires_in=-60)
    wait_until(lambda: len(events.events_for(event="refreshed")) >= 9, timeout=30,
               message="the second four refreshed")
    seen = [r for a in second for r in token_server.requests_for(a.account_key)]
    assert max_overlap(seen) >= 2, f"max_in_flight=4 after reload: saw only {max_overlap(seen)}"
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_reload_applies_the_log_level(migrated_env, seeder, token_server, events):
    d = continuous(migrated_env, {"daemon": {"log_level": "info"}})
    a = seeder.add_account("google", expires_in=-60)
    events.wait_for(lambda e: e["account_id"] == a.id, timeout=15)
    time.sleep(0.3)
    assert ": debug: " not in d.log(), "no debug records at log_level = info"

    migrated_env.write_config({"daemon": {"log_level": "debug"}})
    reload(d, r"configuration reloaded")
    size = d.log_size()
    b = seeder.add_account("google", expires_in=-60)
    d.wait_for_log(rf": debug: account {b.id} refreshed", timeout=15, after=size)
    d.terminate()


def test_key_list_change_applies_to_new_encryptions_and_listed_old_keys_still_decrypt(
        migrated_env, seeder, token_server, events, fernet_keys):
    old = fernet_keys.primary
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"}})
    rotated = fernet_keys.with_new_primary()  # [new, old]
    rotated.write(migrated_env.keys_file)
    reload(d, r"configuration reloaded")

    a = seeder.add_account("github", expires_in=-60)  # encrypted by the app under the old key
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=15)
    row = seeder.row(a.id)
    new_only = Fernet(rotated.primary)
    for col in ("access_token", "refresh_token"):
        assert new_only.decrypt(row[col].encode()), col
        try:
            Fernet(old).decrypt(row[col].encode())
            raise AssertionError(f"{col} was written under the old key after the reload")
        except InvalidToken:
            pass
    assert new_only.decrypt(row["refresh_token"].encode()).decode() == \
        token_server.current_refresh_token(a.account_key)

    # The old key dropped from the list: what only it encrypted no longer decrypts.
    FernetKeys([rotated.primary]).write(migrated_env.keys_file)
    reload(d, r"configuration reloaded")
    b = seeder.add_account("google", expires_in=-60)  # the seeder still writes under `old`
    d.wait_for_log(rf"account {b.id}: .*undecryptable_refresh_token", timeout=15)
    assert token_server.requests_for(b.account_key) == [], "nothing sent for it"
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_changed_conninfo_reconnects(migrated_env, seeder, token_server, events, db):
    d = continuous(migrated_env)

    def backend_pids():
        return {r[0] for r in db.cluster.backends(db.name) if r[1] == "oauth-refreshd"}

    before = wait_until(backend_pids, timeout=10, message="the daemon's session")
    migrated_env.write_config({"database": {"conninfo": db.dsn + "?connect_timeout=7"}})
    reload(d, r"configuration reloaded")
    d.wait_for_log(r"database connection settings changed: reconnecting", timeout=5)
    wait_until(lambda: backend_pids() and not (backend_pids() & before), timeout=15,
               message="a new database session replacing the old one")
    a = seeder.add_account("microsoft", expires_in=-60)
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=20)
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_changed_state_directory_keeps_the_spool_where_it_is_until_restart(
        migrated_env, seeder, token_server, events, tmp_path):
    """The spool holds results not yet written: a reload never moves it. The operator is
    told the new directory takes effect at the next restart."""
    d = continuous(migrated_env)
    elsewhere = tmp_path / "new-state"
    elsewhere.mkdir(mode=0o700)
    migrated_env.write_config({"daemon": {"state_directory": str(elsewhere)}})
    reload(d, r"configuration reloaded")
    d.wait_for_log(r"state_directory changed from .* to .*new-state: the spool stays in "
                   r".*/spool until the next restart", timeout=5)
    a = seeder.add_account("github", expires_in=-60)   # rotates: goes through the spool
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=20)
    assert not (elsewhere / "spool").exists(), "the spool was not moved by the reload"
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_config_that_fails_validation_is_rejected_whole(
        migrated_env, seeder, token_server, events):
    d = continuous(migrated_env, {"daemon": {"log_level": "info"}})
    soon = seeder.add_account("google", expires_in=20 * 60)
    # Valid changes (debug, a longer lead time) next to one invalid value.
    migrated_env.write_config({"daemon": {"log_level": "debug"},
                               "refresh": {"lead_time": "30min", "max_in_flight": "lots"}})
    m = reload(d)
    assert "failed" in m.group(0), d.log_tail()
    assert re.search(r"reload failed: .*max_in_flight", d.log()), d.log_tail()
    time.sleep(2.5)
    assert token_server.requests_for(soon.account_key) == [], (
        "the new lead time must not apply: the whole config was rejected")
    assert ": debug: " not in d.log(), "the new log level must not apply either"
    # An unreadable secret file rejects the reload too.
    migrated_env.write_config({"daemon": {"log_level": "debug"},
                               "provider.github": {"client_secret_file": "/nonexistent/secret"}})
    m = reload(d)
    assert "failed" in m.group(0) and "/nonexistent/secret" in d.log(), d.log_tail()
    assert d.running()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_reload_never_drops_a_request_in_flight(
        migrated_env, seeder, token_server, events, fernet_keys):
    d = continuous(migrated_env)
    token_server.hold()
    a = seeder.add_account("github", expires_in=-60)
    wait_until(lambda: token_server.in_flight(), timeout=15, message="a request in flight")
    rotated = fernet_keys.with_new_primary()
    rotated.write(migrated_env.keys_file)
    migrated_env.write_config({"refresh": {"request_timeout": "20s", "lead_time": "10min"}})
    reload(d, r"configuration reloaded")
    token_server.release()
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=15)
    row = seeder.row(a.id)
    plain = MultiFernet([Fernet(k) for k in rotated.keys]).decrypt(row["refresh_token"].encode())
    assert plain.decode() == token_server.current_refresh_token(a.account_key), (
        "the rotated refresh token answered to the request in flight must be stored")
    assert token_server.refresh_count(a.account_key) == 1
    d.terminate()
    assert d.returncode == 0, d.log_tail()


# ---- shutdown ------------------------------------------------------------------------------

def test_sigterm_finishes_requests_in_flight_releases_unsent_claims_and_exits_0(
        migrated_env, seeder, token_server, db):
    accts = [seeder.add_account("google", expires_in=-60) for _ in range(6)]
    token_server.hold()
    # One request per second: some accounts are claimed but wait for their turn.
    d = continuous(migrated_env, {"provider.google": {"max_rate": 1, "max_in_flight": 8},
                                  "daemon": {"shutdown_timeout": "20s"}})
    wait_until(lambda: token_server.in_flight() >= 1, timeout=15, message="a request in flight")

    def leased():
        return {a.id for a in accts if lease_of(db, a.id)["lease_owner"] is not None}

    wait_until(lambda: len(leased()) > token_server.in_flight(), timeout=10,
               message="a claimed account waiting for its turn")
    d.send_signal(signal.SIGTERM)
    d.wait_for_log(r"SIGTERM: stopping", timeout=5)
    sent = {a.id for a in accts if token_server.requests_for(a.account_key)}
    unsent = {a.id for a in accts} - sent
    assert sent, "some requests must be in flight at SIGTERM"
    wait_until(lambda: leased() == sent, timeout=10,
               message=f"claims of unsent accounts released while {sorted(sent)} stay in flight")
    for aid in unsent:
        st = lease_of(db, aid)
        assert st["lease_until"] is None and st["attempts"] == 0, (aid, st)
    assert d.running(), "the daemon waits for its requests in flight"
    n_requests = len(token_server.requests)

    token_server.release()
    rc = d.wait(20)
    assert rc == 0, f"expected exit 0 after draining, saw {rc}\n{d.log_tail()}"
    assert len(token_server.requests) == n_requests, "nothing may be sent after SIGTERM"
    for a in accts:
        row = seeder.read(a.id)
        if a.id in sent:
            assert row["access_token"] == token_server.issued_access_tokens(a.account_key)[-1], (
                f"account {a.id}: the answer received during the drain must be written")
        else:
            assert row["access_token"] == a.access_token, f"account {a.id} was never sent"
        assert lease_of(db, a.id)["lease_owner"] is None

    # Released claims can be taken by another instance at once (no lease to wait out).
    t0 = time.monotonic()
    migrated_env.write_config({"provider.google": {"max_rate": 0}})
    d2 = continuous(migrated_env, name="second")
    wait_until(lambda: all(token_server.refresh_count(a.account_key) == 1 for a in accts),
               timeout=10, message="the released accounts refreshed by another instance")
    assert time.monotonic() - t0 < 10
    d2.terminate()


def test_second_sigterm_abandons_what_is_left_but_writes_what_was_received(
        migrated_env, seeder, token_server, db):
    quick = seeder.add_account("google", expires_in=-60)
    slow = seeder.add_account("google", expires_in=-60)
    token_server.inject("delay", account=quick.account_key, ms=1500)
    token_server.inject("delay", account=slow.account_key, ms=20000)
    d = continuous(migrated_env, {"daemon": {"shutdown_timeout": "60s"}})
    wait_until(lambda: token_server.in_flight() == 2, timeout=15, message="two requests in flight")
    d.send_signal(signal.SIGTERM)
    wait_until(lambda: seeder.read(quick.id)["access_token"] != quick.access_token, timeout=10,
               message="the quick answer written during the drain")
    assert d.running(), "still waiting for the slow request"
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    rc = d.wait(10)
    elapsed = time.monotonic() - t0
    assert rc == 0, f"expected exit 0, saw {rc}\n{d.log_tail()}"
    assert elapsed < 5, f"a second SIGTERM must end it at once, took {elapsed:.1f}s"
    assert "abandoning 1 requests in flight" in d.log(), d.log_tail()
    assert seeder.read(slow.id)["access_token"] == slow.access_token
    assert lease_of(db, slow.id)["lease_owner"] is None, "the abandoned claim is released"
    assert lease_of(db, quick.id)["lease_owner"] is None


def test_shutdown_waits_for_a_request_up_to_its_own_timeout_then_exits(
        migrated_env, seeder, token_server, db):
    """shutdown_timeout (2s) is shorter than request_timeout (4s): the drain waits for the
    request until its own timeout (issue 10 part 6: its answer may carry a rotated refresh
    token), then the failure is written, the claim released, and the daemon exits 0."""
    slow = seeder.add_account("google", expires_in=-60)
    token_server.inject("delay", account=slow.account_key, ms=20000)
    d = continuous(migrated_env, {"daemon": {"shutdown_timeout": "2s"},
                                  "refresh": {"request_timeout": "4s"}})
    wait_until(lambda: token_server.in_flight() == 1, timeout=15, message="a request in flight")
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    rc = d.wait(15)
    elapsed = time.monotonic() - t0
    assert rc == 0, f"expected exit 0, saw {rc}\n{d.log_tail()}"
    assert elapsed < 8, f"request_timeout = 4s: exited after {elapsed:.1f}s"
    assert elapsed >= 3.5, f"the request was given up before its own timeout ({elapsed:.1f}s)"
    assert "abandoning" not in d.log(), "ended by its own timeout, not abandoned\n" + d.log_tail()
    assert re.search(rf"account {slow.id} \(google\): refresh failed", d.log()), d.log_tail()
    assert lease_of(db, slow.id)["lease_owner"] is None


def test_claim_completing_after_sigterm_is_released_not_sent(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("google", expires_in=7200)  # not due: only a request claims it
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"}})
    # The daemon's session must be idle before the lock is taken: a statement of its
    # start-up still running would block on the lock, and PostgreSQL delivers a NOTIFY
    # to a session only between statements.
    wait_until(lambda: db.cluster.admin(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
        "application_name = 'oauth-refreshd' AND state = 'idle'", (db.name,))[0][0] >= 1,
        timeout=20, message="the daemon's session idle")
    time.sleep(0.5)
    locker = db.conn(autocommit=False)
    try:
        locker.execute("LOCK TABLE oauth_refreshd.account_state IN ACCESS EXCLUSIVE MODE")
        db.execute("SELECT pg_notify('oauth_refresh_request', %s)", (str(a.id),))
        # In pipeline mode another of the daemon's statements (a wake-up query, a
        # metrics count) may be the one waiting on the lock, with the claim queued
        # behind it: what matters is that the claim was sent before SIGTERM.
        d.wait_for_log(rf"refresh of account {a.id} requested", timeout=10)
        wait_until(lambda: db.cluster.admin(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
            "application_name = 'oauth-refreshd' AND wait_event_type = 'Lock'",
            (db.name,))[0][0] >= 1, timeout=20,
            message="the daemon's statements waiting on the lock")
        time.sleep(0.3)
        d.send_signal(signal.SIGTERM)
        d.wait_for_log(r"SIGTERM: stopping", timeout=5)
    finally:
        locker.commit()  # the claim statement completes now, after SIGTERM
    rc = d.wait(20)
    assert rc == 0, d.log_tail()
    assert token_server.requests_for(a.account_key) == [], (
        "an account claimed after SIGTERM must be released, not refreshed")
    assert lease_of(db, a.id)["lease_owner"] is None
