"""oauth-refreshctl migrate / status / refresh against a real PostgreSQL (SPEC §2, §5).

Also proves the SQL objects that migrate installs (sql/oauth-refreshd.sql): state
rows kept in step by the trigger, its NOTIFY on oauth_refreshd_account_changed,
revocation cleared by a new refresh token, concurrency with the application's
writes, and that the claim query walks account_state_claim_idx (provider, due_at).
"""

import json
import os
import re
import threading
import time

import psycopg
import pytest

from lib.daemon import DaemonEnv, run_ctl, wait_until
from lib.pgcluster import free_port

SCHEMA_VERSION = 3
PASSWORD = "Ctl-S3cret-Pw"


def ctl(db, *args):
    """oauth-refreshctl without a configuration file: --conninfo names the database."""
    return run_ctl(*args[:1], "--conninfo", db.dsn, *args[1:])


def out(p):
    return p.stdout.decode(errors="replace")


def migrate(db):
    p = ctl(db, "migrate")
    assert p.returncode == 0, f"migrate: expected exit 0, saw {p.returncode}; stderr: {p.stderr}"
    return p


def add_user(db):
    n = db.scalar("SELECT count(*) FROM users") + 1
    return db.scalar(
        "INSERT INTO users (username, email, password_hash, first_name, last_name, date_joined) "
        "VALUES (%s, %s, 'x', 'F', 'L', now()) RETURNING id", (f"user{n}_{time.monotonic_ns()}",
                                                            f"u{n}_{time.monotonic_ns()}@example.test"))


def add_account(db, user_id, provider="google", expires_in=3600, refresh_token="rt",
                key=None):
    """One account; expires_in None = expires_at NULL; refresh_token None = not refreshable."""
    key = key or f"acct-{time.monotonic_ns()}"
    return db.scalar(
        "INSERT INTO oauth_accounts (user_id, provider, provider_account_id, access_token, "
        "refresh_token, expires_at, scope) VALUES (%s, %s, %s, 'at', %s, "
        "CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() + %s::float8 * interval '1 second' END, "
        "'openid') RETURNING id",
        (user_id, provider, key, refresh_token, expires_in, expires_in))


def state(db, account_id):
    rows = db.execute("SELECT due_at, revoked, last_error, attempts, lease_owner "
                      "FROM oauth_refreshd.account_state WHERE account_id = %s", (account_id,))
    return rows[0] if rows else None


def accounts_without_state(db):
    return db.scalar("SELECT count(*) FROM oauth_accounts a WHERE NOT EXISTS "
                     "(SELECT 1 FROM oauth_refreshd.account_state s WHERE s.account_id = a.id)")


def mismatched_due(db):
    """State rows whose due_at does not mirror the account (revoked ones aside)."""
    return db.execute(
        "SELECT a.id, a.expires_at, s.due_at FROM oauth_accounts a "
        "JOIN oauth_refreshd.account_state s ON s.account_id = a.id WHERE NOT s.revoked AND "
        "s.due_at IS DISTINCT FROM CASE WHEN a.refresh_token IS NOT NULL THEN a.expires_at END")


# ---- migrate ------------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_reports_the_version(db):
    p = migrate(db)
    assert f"oauth_refreshd schema is at version {SCHEMA_VERSION}" in out(p), out(p)
    assert db.scalar("SELECT schema_version FROM oauth_refreshd.meta") == SCHEMA_VERSION
    for obj in ("oauth_refreshd.account_state", "oauth_refreshd.account_state_due_idx",
                "oauth_refreshd.account_state_failing_idx", "oauth_refreshd.account_state_revoked_idx"):
        assert db.scalar("SELECT to_regclass(%s) IS NOT NULL", (obj,)), f"{obj} missing"
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'oauth_refreshd_account_change' "
                     "AND tgrelid = 'public.oauth_accounts'::regclass") == 1
    assert p.stderr == "", f"expected a quiet migrate (no NOTICEs), saw: {p.stderr}"


def test_migrate_is_idempotent_and_keeps_state(db):
    uid = add_user(db)
    ids = [add_account(db, uid, expires_in=600 + i) for i in range(5)]
    migrate(db)
    db.execute("UPDATE oauth_refreshd.account_state SET attempts = 3, last_error = 'boom', "
               "last_error_at = now() WHERE account_id = %s", (ids[0],))
    before = db.execute("SELECT * FROM oauth_refreshd.account_state ORDER BY account_id")
    p = migrate(db)
    assert f"oauth_refreshd schema is at version {SCHEMA_VERSION}" in out(p)
    assert "created" not in out(p), out(p)
    after = db.execute("SELECT * FROM oauth_refreshd.account_state ORDER BY account_id")
    assert after == before, f"expected state rows untouched by a second migrate:\n{before}\n{after}"
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'oauth_refreshd_account_change'") == 1


def test_migrate_backfills_state_rows_for_existing_accounts(db):
    uid = add_user(db)
    refreshable = add_account(db, uid, expires_in=120)
    no_token = add_account(db, uid, refresh_token=None)
    no_expiry = add_account(db, uid, provider="github", expires_in=None)
    migrate(db)
    assert accounts_without_state(db) == 0
    exp = db.scalar("SELECT expires_at FROM oauth_accounts WHERE id = %s", (refreshable,))
    assert state(db, refreshable)[0] == exp, "expected due_at = expires_at for a refreshable account"
    assert state(db, no_token)[0] is None, "an account without refresh token is never due"
    assert state(db, no_expiry)[0] is None, "an account without expires_at is never due"


def test_migrate_while_the_application_writes_loses_nothing(db):
    uid = add_user(db)
    for i in range(200):
        add_account(db, uid, expires_in=60 * i)
    stop = threading.Event()
    errors = []
    written = [0]

    def app():
        conn = db.conn()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                with conn.transaction():
                    aid = conn.execute(
                        "INSERT INTO oauth_accounts (user_id, provider, provider_account_id, "
                        "refresh_token, expires_at) VALUES (%s, 'github', %s, 'rt', "
                        "now() + interval '1 hour') RETURNING id", (uid, f"app-{n}")).fetchone()[0]
                    conn.execute("UPDATE oauth_accounts SET expires_at = now() + interval '2 hours' "
                                 "WHERE id = %s", (aid,))
                conn.execute("UPDATE oauth_accounts SET refresh_token = 'rt' || %s, "
                             "expires_at = now() + random() * interval '1 day' "
                             "WHERE id = (SELECT id FROM oauth_accounts ORDER BY random() LIMIT 1)",
                             (n,))
                conn.execute("UPDATE oauth_accounts SET scope = 'email' WHERE id = %s", (aid,))
                written[0] += 1
            except Exception as e:  # any error is a failure of "safe while the app writes"
                errors.append(repr(e))

    t = threading.Thread(target=app)
    t.start()
    try:
        time.sleep(0.3)
        results = []

        def run_migrate():
            results.append(ctl(db, "migrate"))

        for _ in range(3):
            ms = [threading.Thread(target=run_migrate) for _ in range(2)]
            for m in ms:
                m.start()
            for m in ms:
                m.join(120)
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(30)
    for p in results:
        assert p.returncode == 0, f"concurrent migrate: expected exit 0, saw {p.returncode}: {p.stderr}"
    assert len(results) == 6
    assert not errors, f"the application saw errors during migrate: {errors[:5]}"
    assert written[0] > 0, "the application thread did not get to write"
    assert accounts_without_state(db) == 0, "accounts without a state row after concurrent migrate"
    assert mismatched_due(db) == [], "state rows out of step with their accounts"


def test_migrate_refuses_a_newer_schema(db):
    migrate(db)
    db.execute("UPDATE oauth_refreshd.meta SET schema_version = %s", (SCHEMA_VERSION + 1,))
    p = ctl(db, "migrate")
    assert p.returncode == 1, f"expected exit 1 for a newer schema, saw {p.returncode}"
    assert "newer" in p.stderr and f"version {SCHEMA_VERSION + 1}" in p.stderr, p.stderr
    assert db.scalar("SELECT schema_version FROM oauth_refreshd.meta") == SCHEMA_VERSION + 1


# ---- the trigger -----------------------------------------------------------------------------


def test_trigger_keeps_state_rows_and_notifies_on_relevant_changes(db, listen_factory):
    migrate(db)
    changed = listen_factory("oauth_refreshd_account_changed")
    uid = add_user(db)

    def payloads_for(aid):
        return [x for x in changed.payloads if x.split(" ")[0] == str(aid)]

    aid = add_account(db, uid, expires_in=900)
    wait_until(lambda: payloads_for(aid), message="a NOTIFY for the inserted account")
    exp = db.scalar("SELECT extract(epoch FROM expires_at) FROM oauth_accounts WHERE id = %s", (aid,))
    pid, epoch = payloads_for(aid)[0].split(" ")
    assert abs(float(epoch) - float(exp)) < 1e-3, f"expected '{aid} <expires epoch>', saw {payloads_for(aid)}"
    assert state(db, aid)[0] is not None

    db.execute("UPDATE oauth_accounts SET expires_at = now() + interval '3 hours' WHERE id = %s", (aid,))
    wait_until(lambda: len(payloads_for(aid)) == 2, message="a NOTIFY for the expires_at update")
    assert state(db, aid)[0] == db.scalar("SELECT expires_at FROM oauth_accounts WHERE id = %s", (aid,))

    db.execute("UPDATE oauth_accounts SET refresh_token = 'rotated' WHERE id = %s", (aid,))
    wait_until(lambda: len(payloads_for(aid)) == 3, message="a NOTIFY for the refresh_token update")

    # Other columns: no NOTIFY. A marker NOTIFY afterwards proves none was in between.
    db.execute("UPDATE oauth_accounts SET access_token = 'new', scope = 'x', updated_at = now() "
               "WHERE id = %s", (aid,))
    db.execute("NOTIFY oauth_refreshd_account_changed, 'marker'")
    wait_until(lambda: "marker" in changed.payloads, message="the marker")
    assert len(payloads_for(aid)) == 3, f"expected no NOTIFY for other columns: {changed.payloads}"

    # Not refreshable: a state row, never due, no NOTIFY.
    quiet = add_account(db, uid, refresh_token=None)
    assert state(db, quiet) is not None and state(db, quiet)[0] is None
    # The daemon's own write-backs do not wake it.
    with db.conn().transaction() as tx:
        tx.connection.execute("SET LOCAL oauth_refreshd.writer = 'daemon'")
        tx.connection.execute("UPDATE oauth_accounts SET expires_at = now() + interval '1 hour' "
                              "WHERE id = %s", (aid,))
    db.execute("NOTIFY oauth_refreshd_account_changed, 'marker2'")
    wait_until(lambda: "marker2" in changed.payloads, message="the second marker")
    assert not payloads_for(quiet), changed.payloads
    assert len(payloads_for(aid)) == 3, f"expected no NOTIFY for the daemon's write: {changed.payloads}"


def test_new_refresh_token_clears_a_revoked_mark(db):
    migrate(db)
    uid = add_user(db)
    aid = add_account(db, uid, expires_in=60)
    db.execute("UPDATE oauth_refreshd.account_state SET revoked = true, revoked_at = now(), "
               "due_at = NULL, last_error = 'invalid_grant', last_error_at = now(), attempts = 1 "
               "WHERE account_id = %s", (aid,))
    # A new expiry alone does not un-revoke: the refresh token is still the refused one.
    db.execute("UPDATE oauth_accounts SET expires_at = now() + interval '1 hour' WHERE id = %s", (aid,))
    due, revoked, err, attempts, _ = state(db, aid)
    assert (due, revoked, err) == (None, True, "invalid_grant"), state(db, aid)
    db.execute("UPDATE oauth_accounts SET refresh_token = 'fresh-consent' WHERE id = %s", (aid,))
    due, revoked, err, attempts, _ = state(db, aid)
    assert revoked is False and err is None and attempts == 0, state(db, aid)
    assert due == db.scalar("SELECT expires_at FROM oauth_accounts WHERE id = %s", (aid,))


# ---- status ------------------------------------------------------------------------------------


def seed_status(db):
    uid = add_user(db)
    ids = {}
    ids["later"] = [add_account(db, uid, "google", 86400 + i) for i in range(10)]
    ids["due"] = [add_account(db, uid, "github", 60 + i) for i in range(4)]
    ids["plain"] = [add_account(db, uid, "microsoft", 3600, refresh_token=None) for _ in range(2)]
    ids["ms"] = [add_account(db, uid, "microsoft", 7200)]
    migrate(db)
    failing = ids["later"][:3]
    for n, aid in enumerate(failing):
        db.execute("UPDATE oauth_refreshd.account_state SET attempts = 2, last_error = %s, "
                   "last_error_at = now() - %s * interval '1 minute' WHERE account_id = %s",
                   (f"http_503 #{n}", n, aid))
    for aid in ids["later"][3:5]:
        db.execute("UPDATE oauth_refreshd.account_state SET revoked = true, revoked_at = now(), "
                   "due_at = NULL, last_error = 'invalid_grant', last_error_at = now() - "
                   "interval '1 hour' WHERE account_id = %s", (aid,))
    db.execute("UPDATE oauth_refreshd.account_state SET lease_owner = 'host:1', "
               "lease_until = now() + interval '30 seconds' WHERE account_id = %s", (ids["due"][0],))
    return ids


def test_status_json_counts_seeded_accounts(db, tmp_path, fernet_keys):
    ids = seed_status(db)
    env = DaemonEnv(str(tmp_path / "d"), db.dsn, fernet_keys, providers=("google", "github"))
    p = env.ctl("status", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(out(p))
    expected = {"schema_version": SCHEMA_VERSION, "refreshable": 15, "due": 4, "leased": 1,
                "failing": 3, "revoked": 2, "lead_time_s": 300.0,
                "providers": ["github", "google", "microsoft"], "unconfigured": ["microsoft"]}
    seen = {k: st.get(k) for k in expected}
    assert seen == expected, f"expected {expected}, saw {seen}"
    first_due = db.scalar("SELECT oauth_refreshd.utc_text(min(expires_at) - interval '5 min') "
                          "FROM oauth_accounts WHERE id = ANY(%s)", (ids["due"],))
    assert st["next_due_at"] == first_due, st
    assert -300 < st["next_due_in_s"] < 0, st
    google = st["last_errors"]["google"]
    assert [e["error"] for e in google] == ["http_503 #0", "http_503 #1", "http_503 #2",
                                            "invalid_grant", "invalid_grant"], google
    assert [e["account_id"] for e in google[:3]] == ids["later"][:3]
    assert [e["revoked"] for e in google] == [False] * 3 + [True] * 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", google[0]["at"]), google[0]
    assert "github" not in st["last_errors"] and "microsoft" not in st["last_errors"]


def test_status_human_output_and_without_configuration(db):
    seed_status(db)
    p = ctl(db, "status")
    assert p.returncode == 0, p.stderr
    text = out(p)
    for line in (r"refreshable:\s+15", r"due now:\s+4 ", r"in flight:\s+1 ", r"failing:\s+3",
                 r"revoked:\s+2", r"next due:\s+\d{4}-", r"google\s+account \d+\s+\S+\s+http_503 #0"):
        assert re.search(line, text), f"expected /{line}/ in:\n{text}"
    assert "unconfigured" not in text, "without a configuration nothing can be called unconfigured"
    st = json.loads(out(ctl(db, "status", "--json")))
    assert st["unconfigured"] is None and st["lead_time_s"] == 300.0, st


def test_status_empty_database(db):
    migrate(db)
    st = json.loads(out(ctl(db, "status", "--json")))
    assert (st["refreshable"], st["due"], st["next_due_at"], st["last_errors"], st["providers"]) == (
        0, 0, None, {}, []), st
    assert "next due:         none" in out(ctl(db, "status"))


def test_status_on_an_unmigrated_database_exits_69_with_the_migrate_hint(db):
    p = ctl(db, "status")
    assert p.returncode == 69, f"expected exit 69, saw {p.returncode}: {p.stderr}"
    assert "run `oauth-refreshctl migrate`" in p.stderr, p.stderr
    assert out(p) == ""


def test_status_uses_the_configured_conninfo_and_lead_time(db, tmp_path, fernet_keys):
    seed_status(db)
    env = DaemonEnv(str(tmp_path / "d"), db.dsn, fernet_keys)
    env.write_config({"refresh": {"lead_time": "2h"}})
    st = json.loads(out(env.ctl("status", "--json")))
    assert st["lead_time_s"] == 7200.0 and st["due"] == 5, st  # 4 due + the 2h microsoft one
    assert st["unconfigured"] == [], st


def test_broken_configuration_exits_78(db, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[database]\nconninfo = x\nbogus_key = 1\n")
    p = run_ctl("status", config=str(bad))
    assert p.returncode == 78, f"expected 78, saw {p.returncode}: {p.stderr}"
    assert "bogus_key" in p.stderr


# ---- refresh ---------------------------------------------------------------------------------------


def test_refresh_sends_one_request_per_id(db, listen_factory):
    requests = listen_factory("oauth_refresh_request")
    p = ctl(db, "refresh", "5", "42", "9223372036854775807")
    assert p.returncode == 0, p.stderr
    wait_until(lambda: len(requests.payloads) == 3, message="three refresh requests")
    assert requests.payloads == ["5", "42", "9223372036854775807"]
    for i in ("5", "42"):
        assert f"account {i}" in out(p), out(p)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "12x", " 7", "1.5", "+3", "007",
                                 "9223372036854775808", ""])
def test_refresh_rejects_bad_ids_with_64_and_sends_nothing(db, listen_factory, bad):
    requests = listen_factory("oauth_refresh_request")
    p = ctl(db, "refresh", "1", bad)
    assert p.returncode == 64, f"refresh 1 {bad!r}: expected 64, saw {p.returncode}: {p.stderr}"
    assert p.stderr, "expected a message"
    db.execute("NOTIFY oauth_refresh_request, 'marker'")
    wait_until(lambda: "marker" in requests.payloads, message="the marker")
    assert requests.payloads == ["marker"], f"expected nothing sent, saw {requests.payloads}"


def test_refresh_without_ids_is_a_usage_error(db):
    assert ctl(db, "refresh").returncode == 64


# ---- unreachable database -----------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [["migrate"], ["status"], ["status", "--json"], ["refresh", "1"]])
def test_unreachable_database_exits_69_without_the_password(cmd):
    port = free_port()
    for conninfo in (f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app?connect_timeout=5",
                     f"host=127.0.0.1 port={port} user=app password={PASSWORD} dbname=app"):
        p = run_ctl(cmd[0], "--conninfo", conninfo, *cmd[1:])
        assert p.returncode == 69, f"{cmd}: expected 69, saw {p.returncode}: {p.stderr}"
        assert "cannot connect to the database" in p.stderr, p.stderr
        assert PASSWORD not in p.stderr + out(p), f"password leaked: {p.stderr}"


# ---- a password on the command line ---------------------------------------------------------------


PS_WARNING = "visible to every user of this machine in the process list"


@pytest.mark.parametrize("cmd", [["migrate"], ["status"], ["refresh", "1"], ["rotate-keys"]])
def test_a_password_in_conninfo_on_the_command_line_is_warned_about(cmd, fernet_keys):
    """--conninfo sits in argv, which ps shows to everyone: a password in it (key=value,
    URI userinfo or URI query) gets a warning on stderr that names the ways to avoid it
    and never the password itself; a conninfo without one gets no warning."""
    if cmd[0] == "rotate-keys":
        cmd = [*cmd, "--keys-file", fernet_keys.path]
    port = free_port()
    with_password = (f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app?connect_timeout=5",
                     f"host=127.0.0.1 port={port} user=app password={PASSWORD} dbname=app",
                     f"postgresql://app@127.0.0.1:{port}/app?password={PASSWORD}")
    for conninfo in with_password:
        p = run_ctl(cmd[0], "--conninfo", conninfo, *cmd[1:])
        assert p.returncode == 69, f"{cmd}: expected 69, saw {p.returncode}: {p.stderr}"
        assert PS_WARNING in p.stderr, f"{cmd} {conninfo!r}: no warning:\n{p.stderr}"
        assert "PGPASSFILE" in p.stderr and "conninfo_file" in p.stderr, p.stderr
        assert PASSWORD not in p.stderr + out(p), f"password leaked: {p.stderr}"
    for conninfo in (f"postgresql://app@127.0.0.1:{port}/app?connect_timeout=5",
                     f"host=127.0.0.1 port={port} user=app dbname=app passfile=/nonexistent"):
        p = run_ctl(cmd[0], "--conninfo", conninfo, *cmd[1:])
        assert p.returncode == 69, f"{cmd}: expected 69, saw {p.returncode}: {p.stderr}"
        assert PS_WARNING not in p.stderr, p.stderr


# ---- the claim query's plan ------------------------------------------------------------------------


# The per-provider walk of oauth_refreshd.claim_due (sql/oauth-refreshd.sql), kept in step with it.
CLAIM_INNER = """
SELECT c.account_id
  FROM unnest({providers}) AS p(name)
 CROSS JOIN LATERAL (
    SELECT s.account_id, s.due_at
      FROM oauth_refreshd.account_state s
      JOIN public.oauth_accounts a ON a.id = s.account_id
     WHERE s.provider = p.name
       AND s.due_at IS NOT NULL
       AND (s.provider, s.due_at) <= (p.name, now() + {lead} + {jitter})
       AND s.due_at - {lead} - {jitter} * oauth_refreshd.jitter_fraction(s.account_id) <= now()
       AND (s.lease_until IS NULL OR s.lease_until < now())
       AND (s.retry_at IS NULL OR s.retry_at <= now())
       AND a.refresh_token IS NOT NULL
       AND ({since} IS NULL
            OR (COALESCE(s.last_refreshed_at, '-infinity') < {since}
                AND COALESCE(s.last_error_at, '-infinity') < {since}))
     ORDER BY s.due_at
     LIMIT {limit}
       FOR UPDATE OF s SKIP LOCKED) c
"""


def test_claim_query_walks_the_claim_index_on_100k_accounts(db):
    uid = add_user(db)
    # 100,000 accounts over 30 days (a few dozen due now), a tenth not refreshable.
    db.execute(
        "INSERT INTO oauth_accounts (user_id, provider, provider_account_id, refresh_token, "
        "expires_at) SELECT %s, (ARRAY['google','github','microsoft'])[1 + g %% 3], 'p' || g, "
        "CASE WHEN g %% 10 = 0 THEN NULL ELSE 'rt' || g END, "
        "now() + (g * 26) * interval '1 second' FROM generate_series(1, 100000) g", (uid,))
    migrate(db)
    assert db.scalar("SELECT count(*) FROM oauth_refreshd.account_state") == 100000
    db.execute("ANALYZE oauth_accounts")
    db.execute("ANALYZE oauth_refreshd.account_state")
    conn = db.conn()
    # claim_due's own SET clauses (sql/oauth-refreshd.sql).
    conn.execute("SET enable_bitmapscan = off")
    conn.execute("SET enable_seqscan = off")
    plans = {}
    for since in ("NULL::timestamptz", "now() - interval '1 min'"):  # continuous, --once
        literal = CLAIM_INNER.format(lead="interval '5 min'", jitter="interval '1 min'",
                                     providers="'{google,github,microsoft}'::text[]", limit=500,
                                     since=since)
        plans[f"literal, since {since}"] = "\n".join(
            r[0] for r in conn.execute("EXPLAIN " + literal))
    # Inside the SQL function the values are parameters: check the generic plan too.
    conn.execute("PREPARE claim(interval, interval, text[], int, timestamptz) AS " +
                 CLAIM_INNER.format(lead="$1", jitter="$2", providers="$3", limit="$4",
                                    since="$5::timestamptz"))
    conn.execute("SET plan_cache_mode = force_generic_plan")
    plans["generic"] = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN EXECUTE claim('5 min', '1 min', '{google,github,microsoft}', 500, NULL)"))
    for kind, plan in plans.items():
        assert re.search(r"Index (Only )?Scan using account_state_claim_idx", plan), (
            f"{kind} plan: expected an index scan on account_state_claim_idx, saw:\n{plan}")
        assert "Sort" not in plan, f"{kind} plan: expected the index walked in due order:\n{plan}"
        assert "Seq Scan on account_state" not in plan, f"{kind} plan:\n{plan}"
    # And the function itself claims exactly the due ones, once.
    due = db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                    "WHERE due_at <= now() + interval '5 min'")
    claimed = db.execute("SELECT account_id FROM oauth_refreshd.claim_due('t', "
                         "'{google,github,microsoft}', '5 min', '0', '1 min', 1000)")
    assert 0 < len(claimed) == due, f"expected {due} claimed, saw {len(claimed)}"
    again = db.execute("SELECT account_id FROM oauth_refreshd.claim_due('t2', "
                       "'{google,github,microsoft}', '5 min', '0', '1 min', 1000)")
    assert again == [], "leased accounts were claimed twice"


def test_claim_due_works_for_large_account_ids(db):
    """BIGSERIAL ids go past 2^32: the per-account jitter must not overflow bigint."""
    uid = add_user(db)
    migrate(db)
    for aid in (3474675201, 10_000_000_000, 9_000_000_000_000_000_000):
        db.execute("INSERT INTO oauth_accounts (id, user_id, provider, provider_account_id, "
                   "refresh_token, expires_at) VALUES (%s, %s, 'google', %s, 'rt', now())",
                   (aid, uid, f"big-{aid}"))
        frac = db.scalar("SELECT oauth_refreshd.jitter_fraction(%s)", (aid,))
        assert 0.0 <= frac < 1.0, f"jitter_fraction({aid}) = {frac}"
    claimed = db.execute("SELECT account_id FROM oauth_refreshd.claim_due('t', '{google}', "
                         "'5 min', '1 min', '1 min', 10)")
    assert sorted(r[0] for r in claimed) == [3474675201, 10_000_000_000, 9_000_000_000_000_000_000]


def test_a_claim_walks_its_own_providers_rows_even_when_the_statistics_say_little_is_due(db):
    """Issue 12: a backlog of another provider that the last ANALYZE has not seen must not
    make a claim walk account_state_due_idx (every provider's due rows, filtered)."""
    uid = add_user(db)
    db.execute(
        "INSERT INTO oauth_accounts (user_id, provider, provider_account_id, refresh_token, "
        "expires_at) SELECT %s, (ARRAY['google','github','microsoft'])[1 + g %% 3], 'p' || g, "
        "'rt' || g, now() + (g * 26) * interval '1 second' FROM generate_series(1, 60000) g",
        (uid,))
    migrate(db)
    db.execute("ANALYZE oauth_accounts")
    db.execute("ANALYZE oauth_refreshd.account_state")
    # The backlog: 20,000 google accounts due at once, after the statistics were taken.
    db.execute("UPDATE oauth_accounts SET expires_at = now() - interval '1 hour' "
               "WHERE provider = 'google'")
    conn = db.conn()
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET auto_explain.log_analyze = on")
    conn.execute("SET auto_explain.log_buffers = on")
    conn.execute("SET client_min_messages = log")
    conn.execute("SELECT count(*) FROM oauth_refreshd.claim_due('t', '{github}', '5 min', '0', "
                 "'1 min', 500)")
    conn.execute("SET client_min_messages = notice")
    body = "\n".join(line for n in notices if "Update on account_state" in n
                     for line in n.split("\n") if " Scan " in line)
    assert "account_state_claim_idx" in body and "account_state_due_idx" not in body, (
        f"expected the github claim to walk account_state_claim_idx only, saw:\n{body}")
