"""oauth-refreshctl migrate upgrades a version-1 or version-2 database to schema version 3
in place, online (issue 12 §2): every account kept and refreshable; a running older daemon
(built from git history) loses and doubles nothing while the migration runs under it and
after; an interrupted run resumes; a second run changes nothing; progress on a terminal;
the application's writes wait at most a moment.

Version 1 is the schema 0.1.0 installs (tests/fixtures/schema-v1.sql, sql/oauth-refreshd.sql
as of 3913021^); version 2 is main before schema version 3 (tests/fixtures/schema-v2.sql).
"""

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from lib.daemon import Daemon, ctl_path, clean_env, wait_until

SCHEMA_VERSION = 3
# The last commit whose daemon speaks schema version 1 (the one before 3913021).
V1_COMMIT = "5257052"
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


# ---- helpers -----------------------------------------------------------------------------

def load_schema(db, version):
    """Installs the oauth_refreshd schema of an older release, as its migrate did."""
    with open(os.path.join(FIXTURES, f"schema-v{version}.sql")) as f:
        sql = f.read()
    conn = db.conn(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL client_min_messages = warning")
            cur.execute(sql)
        conn.commit()
    finally:
        conn.close()
    assert db.scalar("SELECT schema_version FROM oauth_refreshd.meta") == version


def migrate(db, *args, timeout=600):
    p = subprocess.run([ctl_path(), "migrate", "--conninfo", db.dsn, *map(str, args)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=clean_env())
    p.stdout, p.stderr = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0, f"migrate: expected exit 0, saw {p.returncode}: {p.stderr}"
    return p


def bulk_accounts(db, n, providers=("google", "github", "microsoft"), due_in="-1 hour"):
    """n accounts straight in SQL (dummy tokens: for tests that never refresh them)."""
    tag = f"b{time.monotonic_ns()}"
    db.execute(
        "WITH u AS (INSERT INTO users (username, email, password_hash, first_name, last_name, "
        "date_joined) SELECT %(t)s || g, %(t)s || g || '@example.test', 'x', 'B', 'U', now() "
        "FROM generate_series(1, %(n)s) g RETURNING id) "
        "INSERT INTO oauth_accounts (user_id, provider, provider_account_id, access_token, "
        "refresh_token, expires_at, scope) SELECT u.id, (%(p)s::text[])[1 + u.id %% %(np)s], "
        "%(t)s || u.id, 'at', 'rt', now() + %(due)s::interval, 'openid' FROM u",
        {"t": tag, "n": n, "p": list(providers), "np": len(providers), "due": due_in})


def unfilled(db):
    """Rows without a provider (all of them before the migration adds the column)."""
    return db.scalar("SELECT count(*) FROM oauth_refreshd.account_state s "
                     "WHERE to_jsonb(s) ->> 'provider' IS NULL")


def provider_mismatches(db):
    return db.scalar("SELECT count(*) FROM oauth_accounts a LEFT JOIN oauth_refreshd.account_state s "
                     "ON s.account_id = a.id WHERE s.provider IS DISTINCT FROM a.provider::text")


def index_state(db):
    return dict(db.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relnamespace = 'oauth_refreshd'::regnamespace"))


def state_snapshot(db):
    """What the migration must keep: every state column of every account but the new one."""
    return db.execute(
        "SELECT account_id, due_at, retry_at, lease_owner, lease_until, attempts, last_error, "
        "revoked, revoked_at, last_refreshed_at, refresh_count FROM oauth_refreshd.account_state "
        "ORDER BY account_id")


def build_old_daemon(commit):
    """oauth-refreshd as built from `commit` of this repository's history, cached under the
    build directory. Fails (does not skip) when the history is not there."""
    src = os.environ.get("OAUTH_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
    build = os.environ.get("OAUTH_BUILD_DIR") or os.path.join(src, "build")
    cache = os.path.join(os.path.abspath(build), "old-daemons", commit)
    binary = os.path.join(cache, "build", "oauth-refreshd")
    if os.path.exists(binary):
        return binary
    have = subprocess.run(["git", "-C", src, "cat-file", "-e", f"{commit}^{{commit}}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if have.returncode != 0:
        pytest.fail(f"the older daemon cannot be built: commit {commit} (schema version 1) is not "
                    f"in the git history of {src} ({have.stderr.decode().strip()}); this test "
                    f"needs a clone with history (not a shallow one or a tarball)")
    tmp = cache + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "src"))
    archive = subprocess.Popen(["git", "-C", src, "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", os.path.join(tmp, "src")], stdin=archive.stdout, check=True)
    assert archive.wait() == 0, f"git archive {commit} failed"
    for argv in (["cmake", "-S", os.path.join(tmp, "src"), "-B", os.path.join(tmp, "build"),
                  "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                 ["cmake", "--build", os.path.join(tmp, "build"), "-j2", "--target",
                  "oauth-refreshd"]):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
        assert p.returncode == 0, (f"building the daemon of {commit} failed: {' '.join(argv)}\n"
                                   f"{p.stdout.decode(errors='replace')[-3000:]}")
    shutil.rmtree(cache, ignore_errors=True)
    os.rename(tmp, cache)
    return binary


class OldDaemon(Daemon):
    """A Daemon runner for a binary other than this build's."""

    def __init__(self, binary, config, log_path):
        super().__init__(config, log_path)
        self.binary = binary

    def argv(self, args=()):
        return [self.binary, "-c", self.config] + [str(a) for a in args]


class Writer(threading.Thread):
    """The application: updates and inserts accounts that are not due, timing each write."""

    def __init__(self, db, ids):
        super().__init__(daemon=True)
        self.dsn = db.dsn
        self.ids = ids
        self.stop = threading.Event()
        self.max_wait = 0.0
        self.writes = 0
        self.error = None

    def run(self):
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                i = 0
                while not self.stop.is_set():
                    aid = self.ids[i % len(self.ids)]
                    t0 = time.monotonic()
                    conn.execute("UPDATE oauth_accounts SET expires_at = now() + interval '3 hours' "
                                 "+ %s * interval '1 second', updated_at = now() WHERE id = %s",
                                 (i % 600, aid))
                    self.max_wait = max(self.max_wait, time.monotonic() - t0)
                    self.writes += 1
                    i += 1
                    time.sleep(0.005)
        except Exception as e:  # reported by the test
            self.error = e


# ---- (a) a small older database, migrated, every account intact and refreshable ---------

@pytest.mark.parametrize("version", [1, 2])
def test_an_older_database_is_migrated_with_every_account_intact_and_refreshable(
        version, db, seeder, daemon_env, token_server):
    load_schema(db, version)
    due = [seeder.add_account(p) for p in ("google", "github", "microsoft") for _ in range(4)]
    later = [seeder.add_account(p, expires_in=7200) for p in ("google", "github")]
    not_refreshable = seeder.add_account("google", refresh_token=None)
    failing = seeder.add_account("microsoft")
    revoked = seeder.add_account("github")
    db.execute("UPDATE oauth_refreshd.account_state SET attempts = 3, last_error = 'server_error', "
               "last_error_at = now(), retry_at = now() - interval '1 second' WHERE account_id = %s",
               (failing.id,))
    db.execute("UPDATE oauth_refreshd.account_state SET revoked = true, revoked_at = now(), "
               "due_at = NULL, last_error = 'invalid_grant' WHERE account_id = %s", (revoked.id,))
    before = state_snapshot(db)

    p = migrate(db)
    assert f"upgraded the oauth_refreshd schema from version {version}" in p.stdout, p.stdout
    assert f"oauth_refreshd schema is at version {SCHEMA_VERSION}" in p.stdout, p.stdout
    assert db.scalar("SELECT schema_version FROM oauth_refreshd.meta") == SCHEMA_VERSION
    assert state_snapshot(db) == before, "the migration changed an account's state"
    assert provider_mismatches(db) == 0, "account_state.provider must mirror every account's"
    assert all(index_state(db).get(n) for n in ("account_state_claim_idx",
                                                 "account_state_unfilled_idx",
                                                 "account_state_revoked_changed_idx")), index_state(db)

    rc, log = daemon_env.run_once()
    assert rc == 1 or rc == 0, log
    for a in due + [failing]:
        assert token_server.refresh_count(a.account_key) == 1, f"account {a.id} ({a.provider})"
        assert seeder.read(a.id)["refresh_token"] == token_server.current_refresh_token(a.account_key)
    for a in later + [not_refreshable, revoked]:
        assert token_server.requests_for(a.account_key) == [], f"account {a.id} refreshed"
    assert token_server.violations() == [], token_server.violations()
    # New accounts get their provider from the trigger.
    new = seeder.add_account("microsoft", expires_in=7200)
    assert db.scalar("SELECT provider FROM oauth_refreshd.account_state WHERE account_id = %s",
                     (new.id,)) == "microsoft"
    db.execute("UPDATE oauth_accounts SET provider = 'google' WHERE id = %s", (new.id,))
    assert db.scalar("SELECT provider FROM oauth_refreshd.account_state WHERE account_id = %s",
                     (new.id,)) == "google"


def test_rows_not_yet_backfilled_are_claimed_in_due_order(db):
    """Mid-migration (DDL applied, backfill not done): claim_due still finds every due row,
    through the rows without a provider, in due order and only the named provider's."""
    load_schema(db, 1)
    bulk_accounts(db, 300, due_in="-1 hour")
    migrate(db)
    db.execute("UPDATE oauth_refreshd.account_state SET provider = NULL WHERE account_id % 2 = 0")
    claimed = db.execute("SELECT account_id, provider FROM oauth_refreshd.claim_due("
                         "'t', ARRAY['github'], '5 min', '0', '1 min', 1000)")
    want = db.scalar("SELECT count(*) FROM oauth_accounts WHERE provider = 'github'")
    assert len(claimed) == want, f"expected all {want} due github rows, claimed {len(claimed)}"
    assert {p for _, p in claimed} == {"github"}
    assert db.scalar("SELECT oauth_refreshd.next_wakeup(ARRAY['google'], '5 min', '0') "
                     "<= now()"), "next_wakeup must see the not yet backfilled due rows"


# ---- (b) a running version-1 daemon, migrated while it works -----------------------------

def test_a_running_version_1_daemon_migrated_while_it_works_loses_and_doubles_nothing(
        db, seeder, daemon_env, token_server):
    old_binary = build_old_daemon(V1_COMMIT)
    load_schema(db, 1)
    n = 240
    # Rotating providers (the token server refuses a reused refresh token), coming due
    # over about 8 seconds, so the migration runs in the middle of the work.
    accts = []
    for i, prov in enumerate(("github", "microsoft")):
        accts += seeder.add_accounts(n // 2, prov, expires_in=300 - 2 + i * 0.03,
                                     spread=8.0 / (n // 2))
    bystanders = [a.id for a in seeder.add_accounts(200, "google", expires_in=7200)]
    daemon_env.write_config({"refresh": {"scan_interval": "2s", "batch_size": 20}})
    old = OldDaemon(old_binary, daemon_env.config_path,
                    os.path.join(daemon_env.dir, "v1-daemon.log"))
    daemon_env.daemons.append(old)
    old.start()
    writer = Writer(db, bystanders)
    writer.start()
    try:
        wait_until(lambda: sum(token_server.refresh_count(a.account_key) for a in accts) >= 20,
                   timeout=30, message="the version-1 daemon refreshing")
        p = migrate(db, "--batch-size", 25)
        done_at_migrate = sum(token_server.refresh_count(a.account_key) for a in accts)
        assert done_at_migrate < n, "the migration should run while accounts are still due"
        wait_until(lambda: all(token_server.refresh_count(a.account_key) >= 1 for a in accts),
                   timeout=60, message="every account refreshed by the version-1 daemon")
        time.sleep(2)  # a double refresh would show up now
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    assert old.running, f"the version-1 daemon must keep running on version 3:\n{old.log_tail()}"
    assert f"upgraded the oauth_refreshd schema from version 1" in p.stdout, p.stdout
    for a in accts:
        assert token_server.refresh_count(a.account_key) == 1, f"account {a.id} refreshed twice"
        assert seeder.read(a.id)["refresh_token"] == token_server.current_refresh_token(
            a.account_key), f"account {a.id}: the stored refresh token is not the valid one"
    assert token_server.violations() == [], token_server.violations()
    assert db.scalar("SELECT count(*) FROM oauth_refreshd.account_state WHERE revoked OR "
                     "last_error IS NOT NULL") == 0
    assert db.scalar("SELECT sum(refresh_count) FROM oauth_refreshd.account_state") == n
    assert provider_mismatches(db) == 0
    assert writer.writes > 50 and writer.max_wait < 2.0, (
        f"the application's writes waited up to {writer.max_wait:.3f} s during the migration "
        f"({writer.writes} writes)")

    # The new daemon takes over: accounts that come due now are its to refresh, once.
    old.terminate()
    assert old.returncode == 0, old.log_tail()
    again = accts[:10] + accts[-10:]
    db.execute("UPDATE oauth_accounts SET expires_at = now() - interval '1 minute' "
               "WHERE id = ANY(%s)", ([a.id for a in again],))
    new = daemon_env.daemon("v3")
    new.start()
    wait_until(lambda: all(token_server.refresh_count(a.account_key) == 2 for a in again),
               timeout=30, message="the new daemon refreshing the accounts due again")
    time.sleep(1.5)
    new.terminate()
    for a in accts:
        want = 2 if a in again else 1
        assert token_server.refresh_count(a.account_key) == want, f"account {a.id}"
    assert token_server.violations() == [], token_server.violations()
    print(f"application writes during the migration: {writer.writes}, longest "
          f"{writer.max_wait * 1000:.0f} ms")


# ---- (c) interrupted and resumed; an invalid index is rebuilt -----------------------------

def test_an_interrupted_migration_resumes_where_it_stopped(db):
    load_schema(db, 1)
    bulk_accounts(db, 20000)
    total = unfilled(db)
    proc = subprocess.Popen([ctl_path(), "migrate", "--conninfo", db.dsn, "--batch-size", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        wait_until(lambda: total - unfilled(db) >= 2000, timeout=60,
                   message="the backfill under way")
    finally:
        proc.kill()
        proc.wait()
    # The server runs the batch it had already received to its commit after the client is
    # gone (autocommit); count what is left only once that session has ended, or a batch
    # committed after the count is missing from it (seen in CI: 15,360 counted, 15,340 left).
    wait_until(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'oauth-refreshctl' "
                                 "AND datname = current_database()") == 0,
               timeout=30, message="the killed migrate's server session ending")
    left = unfilled(db)
    assert 0 < left < total, f"killed mid-backfill: expected some rows left, saw {left} of {total}"
    assert db.scalar("SELECT schema_version FROM oauth_refreshd.meta") == SCHEMA_VERSION

    p = migrate(db)
    m = re.search(r"backfill: (\d+) rows of account_state", p.stdout)
    assert m and int(m.group(1)) == left, f"expected the rerun to do the {left} rows left:\n{p.stdout}"
    assert unfilled(db) == 0 and provider_mismatches(db) == 0
    assert all(index_state(db).values()), index_state(db)


def test_an_index_left_invalid_by_an_interrupted_build_is_rebuilt(db, pg_cluster):
    migrate(db)
    # What a killed CREATE INDEX CONCURRENTLY leaves behind: the index, marked invalid.
    with pg_cluster.connect(db.name) as c:
        c.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                  "'oauth_refreshd.account_state_claim_idx'::regclass")
    assert index_state(db)["account_state_claim_idx"] is False
    p = migrate(db)
    assert "account_state_claim_idx: invalid" in p.stdout, p.stdout
    assert index_state(db)["account_state_claim_idx"] is True


# ---- (d) idempotent ----------------------------------------------------------------------

def test_a_second_migrate_says_up_to_date_and_changes_nothing(db):
    load_schema(db, 2)
    bulk_accounts(db, 500)
    migrate(db)
    before = db.execute("SELECT migrated_at, sql_md5 FROM oauth_refreshd.meta")
    procs = db.execute("SELECT oid, xmin::text FROM pg_proc WHERE pronamespace = "
                       "'oauth_refreshd'::regnamespace ORDER BY oid")
    rows = db.execute("SELECT account_id, xmin::text FROM oauth_refreshd.account_state "
                      "ORDER BY account_id")
    p = migrate(db)
    assert "up to date" in p.stdout and "backfill" not in p.stdout, p.stdout
    assert f"oauth_refreshd schema is at version {SCHEMA_VERSION}" in p.stdout
    assert db.execute("SELECT migrated_at, sql_md5 FROM oauth_refreshd.meta") == before
    assert db.execute("SELECT oid, xmin::text FROM pg_proc WHERE pronamespace = "
                      "'oauth_refreshd'::regnamespace ORDER BY oid") == procs
    assert db.execute("SELECT account_id, xmin::text FROM oauth_refreshd.account_state "
                      "ORDER BY account_id") == rows


# ---- (e) progress -----------------------------------------------------------------------

def test_progress_is_one_rewritten_line_on_a_terminal_and_plain_lines_otherwise(db):
    load_schema(db, 1)
    bulk_accounts(db, 3000)
    master, slave = pty.openpty()
    proc = subprocess.Popen([ctl_path(), "migrate", "--conninfo", db.dsn, "--batch-size", "100"],
                            stdout=slave, stderr=subprocess.PIPE, env=clean_env())
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert re.search(r"\rbackfill: 3000 / 3000 rows \(100 %\), \d+ rows/s", text), repr(text)


def test_progress_without_a_terminal_is_plain_lines(db):
    load_schema(db, 1)
    bulk_accounts(db, 3000)
    p = migrate(db, "--batch-size", "100")
    assert "\r" not in p.stdout, repr(p.stdout)
    assert re.search(r"^backfill: 3000 / 3000 rows \(100 %\), \d+ rows/s$", p.stdout, re.M), p.stdout


def test_batch_size_is_checked(db):
    p = subprocess.run([ctl_path(), "migrate", "--conninfo", db.dsn, "--batch-size", "0"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    assert p.returncode == 64 and b"--batch-size" in p.stderr, p.stderr


def test_a_version_1_daemon_records_failures_and_revocations_on_version_3(
        db, seeder, daemon_env, token_server):
    """Version 1 called store_failed with 5 arguments and store_revoked with 4: on version 3
    those calls still resolve (the later parameters have defaults) and do their work."""
    old_binary = build_old_daemon(V1_COMMIT)
    load_schema(db, 1)
    migrate(db)
    ok = seeder.add_account("google")
    failing = seeder.add_account("github")
    revoked = seeder.add_account("microsoft")
    token_server.revoke(revoked.account_key)
    token_server.inject("http503", account=failing.account_key, count=None)
    old = OldDaemon(old_binary, daemon_env.config_path,
                    os.path.join(daemon_env.dir, "v1-once.log"))
    daemon_env.daemons.append(old)
    rc, log = old.run_once()
    assert "does not exist" not in log and "is not unique" not in log, log
    assert token_server.refresh_count(ok.account_key) == 1, log
    st = dict((r[0], r[1:]) for r in db.execute(
        "SELECT account_id, revoked, last_error IS NOT NULL, attempts, provider "
        "FROM oauth_refreshd.account_state"))
    assert st[ok.id] == (False, False, 0, "google"), st[ok.id]
    assert st[revoked.id][0] is True and st[revoked.id][1] is True, (st[revoked.id], log)
    assert st[failing.id][0] is False and st[failing.id][1] is True and st[failing.id][2] == 1, (
        st[failing.id], log)
