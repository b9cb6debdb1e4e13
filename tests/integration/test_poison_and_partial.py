"""Issue 10, parts 1 and 2 (store side): a rotated refresh token is kept whatever else is
wrong with the answer, and one bad value never poisons a batch.

Part 1: the token server really rotates and answers without an access token
(`rotate_broken`); the row must hold the provider's live refresh token, the OLD access
token, the failure recorded (a `failed` event, retry by backoff), and the next attempt
must succeed with the new token without any reuse — also through a database outage and a
restart (the partial result is spooled as a "P2" line and replayed).

Part 2: a value longer than its column (a 60-character token_type, VARCHAR(50)) fails only
its own account; a batch the database refuses for one row's data (a CHECK constraint or a
trigger the test installs) is split until that row stands alone, the others are written,
the bad one is failed with its SQLSTATE; and a poison line in the spool is set aside while
the restart goes on refreshing.
"""

import base64
import glob
import os
import signal
import time

from lib.daemon import wait_until
from lib.spoolfmt import spool_line, spool_partial_line

LONG_TOKEN_TYPE = "B" * 60


def spool_files(env, pattern="seg-*.spool"):
    return glob.glob(os.path.join(env.state_dir, "spool", pattern))


def state_of(db, account_id):
    keys = ("attempts", "last_error", "retry_at", "lease_owner", "revoked", "refresh_count")
    rows = db.execute("SELECT " + ", ".join(keys) + " FROM oauth_refreshd.account_state "
                      "WHERE account_id = %s", (account_id,))
    return dict(zip(keys, rows[0]))


def continuous(env, overrides=None):
    if overrides:
        env.write_config(overrides)
    d = env.daemon("continuous")
    d.start()
    d.wait_for_log("ready", timeout=30)
    return d


def assert_partial_kept(seeder, token_server, db, acct, error):
    """The row holds the provider's live refresh token and the OLD access token."""
    row = seeder.read(acct.id)
    assert row["refresh_token"] == token_server.current_refresh_token(acct.account_key), (
        "the rotated refresh token must be stored")
    assert row["refresh_token"] != acct.refresh_token
    assert row["access_token"] == acct.access_token, "the old access token is kept"
    assert row["expires_at"] == acct.expires_at, "expires_at is kept"
    st = state_of(db, acct.id)
    assert st["attempts"] == 1 and st["last_error"] == error, st
    assert st["retry_at"] is not None and st["lease_owner"] is None and not st["revoked"], st
    return row


def assert_refreshed_with_new_token(seeder, token_server, acct):
    row = seeder.read(acct.id)
    assert row["access_token"] == token_server.issued_access_tokens(acct.account_key)[-1]
    assert row["refresh_token"] == token_server.current_refresh_token(acct.account_key)
    assert token_server.violations() == [], token_server.violations()


# ---- part 1 --------------------------------------------------------------------------------

def test_a_rotated_token_in_an_answer_without_access_token_is_kept_and_used_next(
        migrated_env, seeder, token_server, events, db):
    a = seeder.add_account("github", expires_in=-60)
    token_server.inject("rotate_broken", provider="github", account=a.account_key, count=1,
                        breakage="no_access_token")
    d = continuous(migrated_env, {"refresh": {"retry_min": "3s", "retry_max": "6s"}})
    events.wait_for(lambda e: e["event"] == "failed" and e["account_id"] == a.id, timeout=30)
    failed = events.events_for(a.id, "failed")
    assert failed[0]["error"] == "missing_access_token" and failed[0]["retry_at"], failed
    assert token_server.refresh_count(a.account_key) == 1
    assert_partial_kept(seeder, token_server, db, a, "missing_access_token")
    retry_at = state_of(db, a.id)["retry_at"].timestamp()
    assert retry_at > time.time() + 0.5, "due again after the backoff, not in a tight loop"

    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=30)
    reqs = token_server.requests_for(a.account_key)
    assert reqs[1].wall_start >= retry_at - 0.1, "the next attempt waits for retry_at"
    assert_refreshed_with_new_token(seeder, token_server, a)
    assert token_server.refresh_count(a.account_key) == 2
    assert len(events.events_for(a.id, "failed")) == 1
    st = state_of(db, a.id)
    assert st["attempts"] == 0 and st["last_error"] is None, st
    d.terminate()


def test_a_partial_result_survives_a_database_outage_and_a_restart(
        migrated_env, seeder, token_server, pg_cluster, db):
    a = seeder.add_account("github", expires_in=-60)
    token_server.inject("rotate_broken", provider="github", account=a.account_key, count=1,
                        breakage="no_access_token")
    token_server.delay_ms = 1500
    migrated_env.write_config({"refresh": {"retry_min": "6s", "retry_max": "8s"},
                               "daemon": {"shutdown_timeout": "2s"}})
    d = migrated_env.daemon("first")
    d.start()
    wait_until(lambda: token_server.in_flight() == 1, timeout=20, message="request in flight")
    pg_cluster.stop(mode="fast")
    try:
        wait_until(lambda: token_server.refresh_count(a.account_key) == 1, timeout=20,
                   message="the provider rotated")
        wait_until(lambda: len(spool_files(migrated_env)) >= 1, timeout=10,
                   message="the partial result spooled")
        with open(spool_files(migrated_env)[0]) as f:
            assert f.read().startswith("P2 "), "a partial result is a P2 line"
        d.send_signal(signal.SIGTERM)
        d.wait(timeout=30)
        assert d.returncode == 0, d.log_tail()
    finally:
        pg_cluster.start()
    token_server.delay_ms = 0
    # The restart replays it before anything else: the row holds the live token.
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert "replaying 1 spooled result" in log, log[-3000:]
    assert_partial_kept(seeder, token_server, db, a, "missing_access_token")
    assert spool_files(migrated_env) == []
    # And the next attempt uses it (the account is due again after its backoff).
    time.sleep(max(0.0, state_of(db, a.id)["retry_at"].timestamp() - time.time()) + 0.2)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert_refreshed_with_new_token(seeder, token_server, a)
    assert token_server.refresh_count(a.account_key) == 2


def test_a_partial_line_written_to_the_documented_format_is_replayed(
        migrated_env, seeder, fernet_keys, db):
    """The P2 line is a contract like the S2 line (docs/architecture.md, "The spool")."""
    a = seeder.add_account("microsoft", expires_in=7200, id_token="old-idt")  # not due
    row = seeder.read(a.id)
    raw = base64.urlsafe_b64decode(fernet_keys.primary)
    retry = int(time.time()) + 600
    seg = os.path.join(migrated_env.state_dir, "spool", "seg-%020d.spool" % 7)
    os.makedirs(os.path.dirname(seg), mode=0o700, exist_ok=True)
    with open(seg, "w") as f:
        f.write(spool_partial_line(raw, a.id, 2, retry * 1_000_000,
                                   row["refresh_token_ciphertext"],
                                   fernet_keys.encrypt("spooled-rt"),
                                   id_token=fernet_keys.encrypt("spooled-idt"),
                                   error="missing_access_token"))
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert "replaying 1 spooled result" in log, log[-3000:]
    got = seeder.read(a.id)
    assert (got["access_token"], got["refresh_token"], got["id_token"]) == (
        a.access_token, "spooled-rt", "spooled-idt"), got
    assert got["expires_at"] == a.expires_at and got["token_type"] == "Bearer"
    st = state_of(db, a.id)
    assert st["last_error"] == "missing_access_token" and st["attempts"] == 1, st
    assert int(st["retry_at"].timestamp()) == retry
    assert spool_files(migrated_env) == []


# ---- part 2: values that do not fit ----------------------------------------------------------

def test_a_token_type_longer_than_its_column_fails_only_its_own_account(
        migrated_env, seeder, token_server, events, db, pg_cluster):
    others = seeder.add_accounts(8, "github", expires_in=-60)
    rot = seeder.add_account("github", expires_in=-60)
    plain = seeder.add_account("google", expires_in=-60)
    for acct in (rot, plain):
        token_server.inject("token_type", account=acct.account_key, count=1,
                            value=LONG_TOKEN_TYPE)
    # Hold the answers so they reach the store together (one batch).
    token_server.delay_ms = 1000
    migrated_env.write_config({"refresh": {"retry_min": "1h", "retry_max": "2h"},
                               "daemon": {"shutdown_timeout": "2s"}})
    d = migrated_env.daemon("first")
    d.start()
    wait_until(lambda: token_server.in_flight() == 10, timeout=20, message="all in flight")
    pg_cluster.stop(mode="fast")
    try:
        wait_until(lambda: token_server.in_flight() == 0, timeout=20, message="all answered")
    finally:
        pg_cluster.start()
    # (The event listener may miss what is sent right after the database restarts: the
    # rows and the state are the record here.)
    wait_until(lambda: all(seeder.read(a.id)["refresh_token"] ==
                           token_server.current_refresh_token(a.account_key) for a in others)
               and state_of(db, rot.id)["last_error"] and state_of(db, plain.id)["last_error"],
               timeout=30, message="every result written")
    for acct in others:
        assert_refreshed_with_new_token(seeder, token_server, acct)
    # GitHub rotated: the new refresh token is kept all the same.
    assert_partial_kept(seeder, token_server, db, rot, "token_type_too_long")
    # Google did not: the row is untouched, the attempt failed.
    row = seeder.read(plain.id)
    assert (row["access_token"], row["refresh_token"]) == (plain.access_token, plain.refresh_token)
    assert row["token_type"] == "Bearer"
    assert state_of(db, plain.id)["last_error"] == "token_type_too_long"
    assert "writing it in halves" not in d.log(), "caught before the batch, not by the database"
    d.terminate()


POISON_TRIGGER = """
CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = {id} THEN
        RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_poison BEFORE UPDATE ON oauth_accounts
    FOR EACH ROW EXECUTE FUNCTION test_poison();
"""


def test_a_batch_refused_for_one_rows_data_is_split_and_the_rest_written(
        migrated_env, seeder, token_server, events, db, pg_cluster):
    accts = seeder.add_accounts(40, "github", expires_in=-60)
    bad = accts[17]
    db.execute("ALTER TABLE oauth_accounts ADD CONSTRAINT test_no_poison "
               "CHECK (token_type IS DISTINCT FROM 'Poison')")
    token_server.inject("token_type", account=bad.account_key, count=1, value="Poison")
    token_server.delay_ms = 1000
    migrated_env.write_config({"refresh": {"retry_min": "1h", "retry_max": "2h"},
                               "daemon": {"shutdown_timeout": "2s"}})
    d = migrated_env.daemon("first")
    d.start()
    wait_until(lambda: token_server.in_flight() == 40, timeout=20, message="all in flight")
    pg_cluster.stop(mode="fast")
    try:
        wait_until(lambda: token_server.in_flight() == 0, timeout=20, message="all answered")
    finally:
        pg_cluster.start()
    good = [a for a in accts if a is not bad]
    wait_until(lambda: all(seeder.read(a.id)["refresh_token"] ==
                           token_server.current_refresh_token(a.account_key) for a in good)
               and state_of(db, bad.id)["last_error"], timeout=30,
               message="the 39 good results and the bad one's failure written")
    for acct in good:
        assert_refreshed_with_new_token(seeder, token_server, acct)
    # A rotated result refused for its token_type still keeps its refresh token.
    assert_partial_kept(seeder, token_server, db, bad, "db_23514")
    assert seeder.read(bad.id)["token_type"] == "Bearer"
    log = d.log()
    assert "writing it in halves" in log, log[-3000:]
    # Bisecting 40 takes a handful of statements, not a retry every second forever.
    time.sleep(2)
    refusals = log.count("refuses a batch")
    assert 1 <= refusals <= 8, refusals
    assert d.log().count("refuses a batch") == refusals, "the store stopped retrying"
    assert d.running()
    d.terminate()


def test_a_poison_line_in_the_spool_is_set_aside_and_the_restart_goes_on(
        migrated_env, seeder, token_server, fernet_keys, db, events):
    n = 1100  # more than the 1,000 waiting results at which the engine stops claiming
    accts = seeder.add_accounts(n, "microsoft", expires_in=7200)  # not due
    poison = accts[555]
    db.execute(POISON_TRIGGER.format(id=poison.id))
    due = seeder.add_account("github", expires_in=-60)
    raw = base64.urlsafe_b64decode(fernet_keys.primary)
    old = dict(db.execute("SELECT id, refresh_token FROM oauth_accounts WHERE id = ANY(%s)",
                          ([a.id for a in accts],)))
    expires = int(time.time()) + 3600
    seg = os.path.join(migrated_env.state_dir, "spool", "seg-%020d.spool" % 7)
    os.makedirs(os.path.dirname(seg), mode=0o700, exist_ok=True)
    access = fernet_keys.encrypt("spooled-access")
    with open(seg, "w") as f:
        for a in accts:
            f.write(spool_line(raw, a.id, 2, expires * 1_000_000, old[a.id], access,
                               fernet_keys.encrypt("spooled-rt-%d" % a.id),
                               scope="openid offline_access", token_type="Bearer"))
    migrated_env.write_config({"daemon": {"shutdown_timeout": "2s"}})
    d = migrated_env.daemon("restart")
    d.start()
    d.wait_for_log("ready", timeout=30)
    wait_until(lambda: db.scalar("SELECT count(*) FROM oauth_accounts WHERE id = ANY(%s) "
                                 "AND expires_at > now() + interval '59 minutes' "
                                 "AND expires_at < now() + interval '61 minutes'",
                                 ([a.id for a in accts],)) == n - 1,
               timeout=60, message="every good spooled result written")
    for a in (accts[0], accts[554], accts[556], accts[-1]):
        assert seeder.read(a.id)["refresh_token"] == "spooled-rt-%d" % a.id
    # The poison one: set aside for the operator, its failure recorded, the row untouched.
    wait_until(lambda: len(spool_files(migrated_env, "*.bad")) == 1, timeout=30,
               message="the poison result set aside")
    with open(spool_files(migrated_env, "*.bad")[0]) as f:
        aside = f.read()
    assert aside.count("\n") == 1 and aside.split(" ")[1] == str(poison.id), aside[:200]
    assert seeder.read(poison.id)["refresh_token"] == poison.refresh_token
    # (A replayed result holds no claim: the state row is not ours to change, but the
    # failed attempt is announced like any other.)
    events.wait_for(lambda e: e["event"] == "failed" and e["account_id"] == poison.id and
                    e["error"] == "db_23514", timeout=30)
    assert "kept aside" in d.log()
    wait_until(lambda: spool_files(migrated_env) == [], timeout=30, message="spool settled")
    # And the daemon goes on refreshing.
    wait_until(lambda: token_server.refresh_count(due.account_key) == 1, timeout=30,
               message="a due account refreshed after the replay")
    wait_until(lambda: seeder.read(due.id)["refresh_token"] ==
               token_server.current_refresh_token(due.account_key), timeout=30,
               message="its result written")
    assert d.running()
    d.terminate()
