"""The database side, proven against a real server: the asynchronous PostgreSQL
connection (src/db.c), and the daemon's write-back SQL (sql/oauth-refreshd.sql).

Drives $OAUTH_BUILD_DIR/tests/tools/db_probe (one db connection on a libev loop,
commanded on stdin, reporting JSON lines) against the shared throwaway cluster:
pipelined statements answered in order and exactly once, errors confined to
their statement, LISTEN/NOTIFY, and every way a connection can go away.

The second half calls oauth_refreshd.store_refreshed / store_failed / store_revoked /
next_wakeup directly (after `oauth-refreshctl migrate`): compare-and-swap, which
claims are given back, the answer per input id in input order, the state the
trigger no longer writes for the daemon's own write-backs, and the event payloads
as compact JSON with hostile error text escaped (the daemon itself only passes
sanitised error codes; tests/integration/test_events_wire.py checks its payloads).
"""

import datetime
import json
import random
import os
import subprocess
import threading
import time

import psycopg
import pytest

from lib.daemon import build_dir, clean_env


def probe_path():
    return os.path.join(build_dir(), "tests", "tools", "db_probe")


class Probe:
    """One db_probe process; events are parsed JSON lines, in arrival order."""

    def __init__(self, conninfo, channels=(), session_sql=None, connect_timeout=None,
                 retry_min=None, retry_max=None):
        argv = [probe_path()]
        for c in channels:
            argv += ["-l", c]
        if session_sql is not None:
            argv += ["-s", session_sql]
        if connect_timeout is not None:
            argv += ["-t", str(connect_timeout)]
        if retry_min is not None:
            argv += ["-m", str(retry_min)]
        if retry_max is not None:
            argv += ["-M", str(retry_max)]
        argv.append(conninfo)
        self.events = []
        self.raw = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=clean_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr = []
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self):
        for line in self.proc.stdout:
            text = line.decode(errors="replace")
            with self._cond:
                self.raw.append(text)
                try:
                    self.events.append(json.loads(text))
                except ValueError:
                    self.events.append({"event": "garbage", "line": text})
                self._cond.notify_all()

    def _read_err(self):
        for line in self.proc.stderr:
            self._stderr.append(line.decode(errors="replace"))

    @property
    def stderr(self):
        return "".join(self._stderr)

    def send(self, *lines):
        self.proc.stdin.write("".join(line + "\n" for line in lines).encode())
        self.proc.stdin.flush()

    def of(self, kind, **match):
        with self._cond:
            return [e for e in self.events
                    if e.get("event") == kind and all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, kind, count=1, timeout=20, **match):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events
                         if e.get("event") == kind and all(e.get(k) == v for k, v in match.items())]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"expected {count} '{kind}' event(s) matching {match} within {timeout}s, "
                        f"saw {len(found)}; last events: {self.events[-15:]}; stderr: {self.stderr}")
                self._cond.wait(min(left, 0.2))

    def result(self, qid, timeout=20):
        return self.wait_for("result", id=qid, timeout=timeout)[0]

    def query(self, qid, sql, *params, timeout=20):
        self.send("query " + qid + " " + "\t".join([sql, *params]))
        return self.result(qid, timeout)

    def status(self):
        n = len(self.of("status"))
        self.send("status")
        return self.wait_for("status", count=n + 1)[-1]

    def close(self):
        """quit, then expect a clean exit (ASan builds: no leaks, no errors)."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("db_probe did not exit within 20s after quit")
        self._reader.join(5)
        self._err_reader.join(5)
        return rc


@pytest.fixture
def probes():
    made = []

    def make(*args, **kw):
        p = Probe(*args, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def close_clean(p):
    rc = p.close()
    assert rc == 0, f"db_probe: expected exit 0, saw {rc}; stderr:\n{p.stderr}"
    assert "ERROR: AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr


def results_once_each(p, ids):
    """Every id got exactly one result."""
    for qid in ids:
        seen = p.of("result", id=qid)
        assert len(seen) == 1, f"statement {qid}: expected exactly 1 callback, saw {len(seen)}: {seen}"


def test_connects_and_answers_a_parameterised_statement(db, probes):
    p = probes(db.dsn)
    p.wait_for("connected")
    r = p.query("a", "SELECT $1::int + 1, $2::text, $3::text IS NULL", "41", "héllo wörld", "\\N")
    assert r["status"] == "PGRES_TUPLES_OK", r
    assert r["rows"] == [["42", "héllo wörld", "t"]], r
    assert p.status() == {"event": "status", "connected": True, "pending": 0, "connects": 1}
    close_clean(p)


def test_key_value_conninfo_and_application_name(db, probes):
    c = db.cluster
    p = probes(f"host={c.host} port={c.port} user={c.superuser} dbname={db.name}")
    p.wait_for("connected")
    r = p.query("who", "SELECT current_database(), current_setting('application_name')")
    assert r["rows"] == [[db.name, "oauth-refreshd"]], r
    close_clean(p)


def test_ten_thousand_pipelined_statements_answered_in_order_exactly_once(db, probes):
    p = probes(db.dsn)
    p.wait_for("connected")
    p.send("burst b1 10000 SELECT $1::int")
    b = p.wait_for("burst", id="b1", timeout=60)[0]
    assert b["accepted"] == 10000, b
    assert (b["ok"], b["error"], b["null"]) == (10000, 0, 0), f"expected 10000 correct answers: {b}"
    assert (b["dups"], b["missing"], b["order_errors"]) == (0, 0, 0), b
    # Interleaved single statements keep their order too.
    p.send(*[f"query q{i} SELECT {i}" for i in range(50)])
    p.wait_for("result", count=50)
    order = [e["id"] for e in p.of("result")]
    assert order == [f"q{i}" for i in range(50)], f"expected results in send order, saw {order}"
    assert [e["rows"] for e in p.of("result")] == [[[str(i)]] for i in range(50)]
    assert p.status()["pending"] == 0
    close_clean(p)


def test_failing_statement_does_not_break_later_ones(db, probes):
    p = probes(db.dsn)
    p.wait_for("connected")
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    p.send("query a INSERT INTO t VALUES (1)",
           "query b SELECT 1/0",
           "query c INSERT INTO t VALUES (2)",
           "query d SELEC syntax error",
           "query e INSERT INTO t VALUES (1)",
           "query f INSERT INTO t VALUES (3)",
           "query g SELECT count(*) FROM t")
    p.wait_for("result", count=7)
    res = {e["id"]: e for e in p.of("result")}
    assert [e["id"] for e in p.of("result")] == list("abcdefg")
    assert res["a"]["status"] == "PGRES_COMMAND_OK", res["a"]
    assert (res["b"]["status"], res["b"].get("sqlstate")) == ("PGRES_FATAL_ERROR", "22012"), res["b"]
    assert res["c"]["status"] == "PGRES_COMMAND_OK", res["c"]
    assert (res["d"]["status"], res["d"].get("sqlstate")) == ("PGRES_FATAL_ERROR", "42601"), res["d"]
    assert (res["e"]["status"], res["e"].get("sqlstate")) == ("PGRES_FATAL_ERROR", "23505"), res["e"]
    assert res["f"]["status"] == "PGRES_COMMAND_OK", res["f"]
    # Each statement was its own transaction: the failures rolled back nothing else.
    assert res["g"]["rows"] == [["3"]], res["g"]
    assert sorted(r[0] for r in db.execute("SELECT id FROM t")) == [1, 2, 3]
    # Errors mixed into a big pipeline stay confined to their statement.
    p.send("burst mixed 3000 SELECT CASE WHEN $1::int % 10 = 3 THEN 1/0 ELSE $1::int END")
    b = p.wait_for("burst", id="mixed", timeout=60)[0]
    assert (b["ok"], b["error"], b["null"]) == (2700, 300, 0), b
    assert (b["dups"], b["missing"], b["order_errors"]) == (0, 0, 0), b
    close_clean(p)


def test_notifications_arrive_including_while_statements_are_in_flight(db, probes):
    p = probes(db.dsn, channels=["chan_a", "Mixed Case; chan"])
    p.wait_for("connected")
    app = db.conn()
    app.execute("NOTIFY chan_a, 'first'")
    app.execute("NOTIFY not_listened, 'nope'")
    p.wait_for("notify", payload="first")
    # Statements are in flight while notifications arrive: they are not held back until
    # the pipeline drains. (The server sends a NOTIFY only between statements, so it comes
    # after slow1 while slow2 is still running.)
    p.send("query slow1 SELECT pg_sleep(0.8), 'one'", "query slow2 SELECT pg_sleep(2), 'two'")
    time.sleep(0.3)
    app.execute("SELECT pg_notify('Mixed Case; chan', 'second')")
    app.execute("SELECT pg_notify('chan_a', 'third')")
    n2 = p.wait_for("notify", payload="second")[0]
    n3 = p.wait_for("notify", payload="third")[0]
    assert n2["channel"] == "Mixed Case; chan", n2
    assert n2["pending"] == 1 and n3["pending"] == 1, (
        f"expected the notifications while slow2 was still pending: {n2} {n3}")
    assert p.result("slow2")["rows"] == [["", "two"]]
    kinds = [(e["event"], e.get("id") or e.get("payload")) for e in p.events
             if e["event"] in ("notify", "result")]
    assert kinds.index(("notify", "second")) < kinds.index(("result", "slow2")), kinds
    # A NOTIFY sent through the probe's own pipeline reaches it as well.
    p.query("self", "SELECT pg_notify($1, $2)", "chan_a", "from myself")
    p.wait_for("notify", payload="from myself")
    assert not p.of("notify", channel="not_listened"), p.of("notify")
    close_clean(p)


def test_terminated_backend_fails_pending_once_then_reconnects_and_listens_again(db, probes):
    p = probes(db.dsn, channels=["chan"], retry_min=0.1, retry_max=1)
    p.wait_for("connected")
    p.send("query s1 SELECT pg_sleep(30)", "query s2 SELECT 2", "query s3 SELECT 3")
    time.sleep(0.5)
    assert p.status()["pending"] == 3
    assert db.cluster.terminate_backends(db.name) >= 1
    d = p.wait_for("disconnected")[0]
    assert d["reason"].startswith("connection lost: FATAL:"), d
    assert d["reason"].endswith("terminating connection due to administrator command"), d
    assert 0 < d["retry_in"] <= 1, d
    for qid in ("s1", "s2", "s3"):
        r = p.result(qid)
        assert r["status"] is None, f"expected {qid} to fail with NULL, saw {r}"
    p.wait_for("connected", count=2)
    results_once_each(p, ("s1", "s2", "s3"))
    assert p.status() == {"event": "status", "connected": True, "pending": 0, "connects": 2}
    # LISTEN was issued again on the new session.
    db.execute("NOTIFY chan, 'after reconnect'")
    p.wait_for("notify", payload="after reconnect")
    assert p.query("after", "SELECT 'ok'")["rows"] == [["ok"]]
    time.sleep(0.3)
    results_once_each(p, ("s1", "s2", "s3", "after"))
    close_clean(p)


def test_server_restart_is_survived(db, probes):
    p = probes(db.dsn, channels=["chan"], retry_min=0.1, retry_max=0.5)
    p.wait_for("connected")
    p.send("query slow SELECT pg_sleep(30)")
    time.sleep(0.3)
    db.cluster.restart(mode="fast")
    p.wait_for("disconnected")
    assert p.result("slow")["status"] is None
    p.wait_for("connected", count=2, timeout=30)
    assert p.query("after", "SELECT 1")["rows"] == [["1"]]
    db.execute("NOTIFY chan, 'back'")
    p.wait_for("notify", payload="back")
    close_clean(p)


def test_server_down_at_start_retries_with_backoff_then_connects(db, probes):
    cluster = db.cluster
    cluster.stop()
    try:
        p = probes(db.dsn, retry_min=0.1, retry_max=0.8)
        ds = p.wait_for("disconnected", count=6, timeout=30)
        assert not p.of("connected")
        delays = [d["retry_in"] for d in ds]
        for k, delay in enumerate(delays):
            base = min(0.8, 0.1 * 2 ** k)
            assert max(0.1, base / 2) - 1e-9 <= delay <= base + 1e-9, (
                f"retry {k}: expected a delay in [{max(0.1, base / 2)}, {base}], saw {delay} "
                f"(all: {delays})")
        assert all(d["reason"].startswith("connect failed") and "refused" in d["reason"] for d in ds), ds
        # Not connected: statements are refused at once, never queued.
        p.send("query early SELECT 1")
        p.wait_for("rejected", id="early")
        assert not p.of("result", id="early")
    finally:
        cluster.start()
    p.wait_for("connected", timeout=30)
    assert p.query("late", "SELECT 1")["rows"] == [["1"]]
    close_clean(p)


def test_backoff_resets_after_a_successful_connection(db, probes):
    p = probes(db.dsn, retry_min=0.2, retry_max=5)
    p.wait_for("connected")
    for n in range(1, 4):
        db.cluster.terminate_backends(db.name)
        d = p.wait_for("disconnected", count=n)[-1]
        assert 0.2 <= d["retry_in"] <= 0.2 + 1e-9, (
            f"expected the first retry after a good connection at retry_min (0.2s), saw {d}")
        p.wait_for("connected", count=n + 1)
    close_clean(p)


@pytest.mark.parametrize("form", ["uri", "keyvalue"])
def test_bad_conninfo_reports_the_reason_without_the_password(db, probes, form):
    c = db.cluster
    secret = "Sup3rS3cretPw"
    if form == "uri":
        conninfo = f"postgresql://{c.superuser}:{secret}@{c.host}:{c.port}/no_such_db"
    else:
        conninfo = f"host={c.host} port={c.port} user={c.superuser} password={secret} dbname=no_such_db"
    p = probes(conninfo, retry_min=0.1, retry_max=0.2)
    ds = p.wait_for("disconnected", count=2)
    assert "no_such_db" in ds[0]["reason"] and "does not exist" in ds[0]["reason"], ds[0]
    close_clean(p)
    everything = "".join(p.raw) + p.stderr
    assert secret not in everything, f"password leaked: {everything}"


@pytest.mark.parametrize("conninfo", [
    "host=127.0.0.1 password=Sup3rS3cretPw bogus_option=1",
    "postgresql://u:Sup3rS3cretPw@127.0.0.1:notaport/db",
    "postgresql://u:Sup3rS3cretPw@127.0.0.1/db?password=Sup3rS3cretPw&bogus=1",
    "host=127.0.0.1 password='Sup3rS3cretPw",
])
def test_malformed_conninfo_is_reported_without_the_password(probes, conninfo):
    p = probes(conninfo, retry_min=0.1, retry_max=0.2)
    ds = p.wait_for("disconnected", count=2)
    assert ds[0]["reason"].startswith("connect failed"), ds[0]
    close_clean(p)
    everything = "".join(p.raw) + p.stderr
    assert "Sup3rS3cretPw" not in everything, f"password leaked: {everything}"


def test_connect_timeout_gives_up_on_a_silent_server(probes):
    import socket
    # A listening socket that never answers: the TCP connect succeeds, the startup hangs.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        port = s.getsockname()[1]
        t0 = time.monotonic()
        p = probes(f"host=127.0.0.1 port={port} dbname=x user=x", connect_timeout=0.5,
                   retry_min=5, retry_max=5)
        d = p.wait_for("disconnected", timeout=10)[0]
        took = time.monotonic() - t0
        assert "timed out" in d["reason"], d
        assert 0.4 <= took <= 4, f"expected the timeout after ~0.5s, took {took:.2f}s"
        close_clean(p)
    finally:
        s.close()


def test_session_sql_runs_before_listen_and_a_failing_one_is_a_connect_failure(db, probes):
    p = probes(db.dsn, channels=["chan"],
               session_sql="SET application_name = 'probe-session'; SET statement_timeout = '7s'")
    p.wait_for("connected")
    r = p.query("s", "SELECT current_setting('application_name'), current_setting('statement_timeout')")
    assert r["rows"] == [["probe-session", "7s"]], r
    close_clean(p)

    bad = probes(db.dsn, channels=["chan"], session_sql="SELECT no_such_function()",
                 retry_min=0.1, retry_max=0.2)
    d = bad.wait_for("disconnected")[0]
    assert "session setup failed" in d["reason"] and "no_such_function" in d["reason"], d
    assert not bad.of("connected")
    close_clean(bad)


def test_set_conninfo_reconnects_to_the_new_database(db, probes):
    other = db.cluster.create_database()
    try:
        p = probes(db.dsn, retry_min=0.1)
        p.wait_for("connected")
        p.send("query slow SELECT pg_sleep(30)")
        time.sleep(0.3)
        p.send("conninfo " + other.dsn)
        d = p.wait_for("disconnected")[0]
        assert d["retry_in"] == 0, d
        assert p.result("slow")["status"] is None
        p.wait_for("connected", count=2)
        assert p.query("where", "SELECT current_database()")["rows"] == [[other.name]]
        close_clean(p)
    finally:
        other.drop()


def test_free_fails_pending_statements_with_null_once(db, probes):
    p = probes(db.dsn)
    p.wait_for("connected")
    p.send("query s1 SELECT pg_sleep(30)", "query s2 SELECT 1", "burst b 100 SELECT $1::int")
    time.sleep(0.3)
    close_clean(p)
    assert p.events[-1] == {"event": "freed"}, p.events[-3:]
    for qid in ("s1", "s2"):
        seen = p.of("result", id=qid)
        assert [e["status"] for e in seen] == [None], f"{qid}: expected one NULL result, saw {seen}"
    b = p.of("burst", id="b")
    assert len(b) == 1 and b[0]["null"] == 100 and b[0]["dups"] == 0, b


# ---- the write-back SQL (sql/oauth-refreshd.sql) ------------------------------------------

LEAD = datetime.timedelta(minutes=5)


def compact(obj):
    """SPEC §5's wire form: compact JSON, members in the given order, UTF-8 as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def utc_text(ts):
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def whole_seconds(delta):
    return (datetime.datetime.now(datetime.timezone.utc) + delta).replace(microsecond=0)


def lease(db, ids, owner, seconds=60):
    db.execute("UPDATE oauth_refreshd.account_state SET lease_owner = %s, "
               "lease_until = now() + make_interval(secs => %s) WHERE account_id = ANY (%s)",
               (owner, seconds, list(ids)))


def state(db, account_id):
    cols = ("lease_owner", "lease_until", "attempts", "retry_at", "last_error", "last_error_at",
            "revoked", "revoked_at", "due_at", "last_refreshed_at", "refresh_count")
    row = db.execute(f"SELECT {', '.join(cols)} FROM oauth_refreshd.account_state "
                     "WHERE account_id = %s", (account_id,))[0]
    return dict(zip(cols, row))


def ciphertext(db, account_id, column="refresh_token"):
    return db.scalar(f"SELECT {column} FROM oauth_accounts WHERE id = %s", (account_id,))


def store_refreshed(conn_or_db, owner, rows):
    """rows: dicts with id, old (ciphertext), and optional access, rt, idt, exp, scope, ttype."""
    col = lambda k: [r.get(k) for r in rows]  # noqa: E731
    return conn_or_db.execute(
        "SELECT account_id, stored FROM oauth_refreshd.store_refreshed(%s, %s::bigint[], "
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], "
        "%s::text[], %s::interval)",
        (owner, col("id"), col("old"), col("access"), col("rt"), col("idt"), col("exp"),
         col("scope"), col("ttype"), LEAD))


HOSTILE_ERRORS = [
    'quote " and backslash \\ and both \\"',
    "controls \x01\x07\x1f and \b\f\n\r\t",
    "non-ASCII é ß 日本語 😀 and a literal \\u0000",
    "</script><!-- ' ; DROP TABLE x; --",
]


@pytest.mark.parametrize("error", HOSTILE_ERRORS)
def test_failed_and_revoked_payloads_are_compact_json_with_error_text_escaped(
        migrated_env, seeder, db, events, error):
    f = seeder.add_account("microsoft")
    r = seeder.add_account("github")
    lease(db, [f.id, r.id], "me")
    retry = whole_seconds(datetime.timedelta(seconds=90))
    db.execute("SELECT oauth_refreshd.store_failed('me', %s::bigint[], %s::text[], "
               "%s::timestamptz[], %s::interval)", ([f.id], [error], [retry], LEAD))
    got = db.execute("SELECT * FROM oauth_refreshd.store_revoked('me', %s::bigint[], %s::text[], "
                     "%s::text[])", ([r.id], [ciphertext(db, r.id)], [error]))
    assert got == [(r.id, True)], f"expected [({r.id}, True)], saw {got}"

    events.wait_for(count=2, timeout=10)
    want = [
        compact({"event": "failed", "account_id": f.id, "provider": "microsoft", "error": error,
                 "retry_at": utc_text(retry)}),
        compact({"event": "revoked", "account_id": r.id, "provider": "github", "error": error}),
    ]
    assert events.payloads == want, f"expected payloads\n  {want}\nsaw\n  {events.payloads}"
    for p in events.payloads:
        assert json.loads(p)["error"] == error, f"error text did not survive the round trip: {p}"
    assert state(db, f.id)["last_error"] == error and state(db, r.id)["last_error"] == error


def test_store_refreshed_writes_unchanged_rows_only_and_keeps_the_others_claims(
        migrated_env, seeder, db, events, listen_factory):
    changed = listen_factory("oauth_refreshd_account_changed")
    w1 = seeder.add_account("google")
    lost_mine = seeder.add_account("google")
    w2 = seeder.add_account("github")
    lost_theirs = seeder.add_account("microsoft")
    lease(db, [w1.id, lost_mine.id, w2.id], "me")
    lease(db, [lost_theirs.id], "other")
    db.execute("UPDATE oauth_refreshd.account_state SET attempts = 3, last_error = 'http_503', "
               "last_error_at = now(), retry_at = now() WHERE account_id = %s", (w1.id,))
    before = {a.id: seeder.row(a.id) for a in (lost_mine, lost_theirs)}
    w2_old_rt = ciphertext(db, w2.id)
    long_exp = whole_seconds(datetime.timedelta(hours=1))
    short_exp = whole_seconds(datetime.timedelta(seconds=60))  # shorter than the lead time
    # The four inserts notified: let those arrive before listening for the write-back's.
    changed.wait_for(count=4, timeout=10)
    changed.clear()

    got = store_refreshed(db, "me", [
        {"id": w1.id, "old": ciphertext(db, w1.id), "access": "new-at-1", "rt": "new-rt-1",
         "exp": long_exp, "scope": "openid", "ttype": "bearer"},
        {"id": lost_mine.id, "old": "not-the-stored-ciphertext", "access": "x", "exp": long_exp},
        {"id": w2.id, "old": w2_old_rt, "access": "new-at-2", "exp": short_exp},
        {"id": lost_theirs.id, "old": "not-the-stored-ciphertext", "access": "x",
         "exp": long_exp},
    ])
    want = [(w1.id, True), (lost_mine.id, False), (w2.id, True), (lost_theirs.id, False)]
    assert got == want, f"expected {want} (input order), saw {got}"

    r1, r2 = seeder.row(w1.id), seeder.row(w2.id)
    assert (r1["access_token"], r1["refresh_token"], r1["expires_at"], r1["scope"],
            r1["token_type"]) == ("new-at-1", "new-rt-1", long_exp, "openid", "bearer"), r1
    assert (r2["access_token"], r2["refresh_token"], r2["expires_at"]) == (
        "new-at-2", w2_old_rt, short_exp), f"NULL refresh token must keep the stored one: {r2}"
    for a in (lost_mine, lost_theirs):
        assert seeder.row(a.id) == before[a.id], f"account {a.id}: a changed row was overwritten"

    s1, s2 = state(db, w1.id), state(db, w2.id)
    for s in (s1, s2):
        assert (s["lease_owner"], s["lease_until"], s["attempts"], s["retry_at"], s["last_error"],
                s["last_error_at"], s["revoked"], s["refresh_count"]) == (
            None, None, 0, None, None, None, False, 1), f"written row's state: {s}"
    assert s1["due_at"] == long_exp, f"expected due_at {long_exp} (= expires_at), saw {s1}"
    now = s2["last_refreshed_at"]  # the writing transaction's now()
    assert s2["due_at"] == now + (short_exp - now) / 2 + LEAD, (
        f"a token shorter than the lead time is due at half its life + lead: expected "
        f"{now + (short_exp - now) / 2 + LEAD}, saw {s2['due_at']}")
    assert state(db, lost_mine.id)["lease_owner"] == "me", (
        "a row not written keeps our claim until the daemon compared the tokens as plaintext")
    t = state(db, lost_theirs.id)
    assert t["lease_owner"] == "other" and t["lease_until"] is not None, (
        f"another instance's claim must be left alone, saw {t}")

    events.wait_for(count=2, timeout=10)
    assert events.payloads == [
        compact({"event": "refreshed", "account_id": w1.id, "provider": "google",
                 "expires_at": utc_text(long_exp)}),
        compact({"event": "refreshed", "account_id": w2.id, "provider": "github",
                 "expires_at": utc_text(short_exp)}),
    ], events.payloads
    time.sleep(0.3)
    assert changed.payloads == [], (
        f"the daemon's own write-back must not notify oauth_refreshd_account_changed, saw "
        f"{changed.payloads}")


def test_store_refreshed_answers_a_full_batch_in_input_order(migrated_env, seeder, db, events):
    accts = seeder.add_accounts(300, "github")
    random.Random(6).shuffle(accts)
    ids = [a.id for a in accts]
    lease(db, ids, "me")
    exp = whole_seconds(datetime.timedelta(hours=1))
    rows = [{"id": a.id, "old": ciphertext(db, a.id), "access": f"at-{a.id}", "exp": exp}
            for a in accts]
    got = store_refreshed(db, "me", rows)
    assert got == [(i, True) for i in ids], "every row written, answered in input order"
    assert db.scalar("SELECT count(*) FROM oauth_refreshd.account_state WHERE account_id = ANY "
                     "(%s) AND due_at = %s AND lease_owner IS NULL AND refresh_count = 1",
                     (ids, exp)) == 300
    events.wait_for(count=300, timeout=10)

    # The same batch again: every compare-and-swap fails now (access_token is not the refresh
    # token), every claim is kept (the daemon compares the tokens as plaintext, then writes
    # or releases), every answer is False, in input order.
    lease(db, ids[:150], "me")
    lease(db, ids[150:], "other")
    got = store_refreshed(db, "me", [dict(r, old="stale") for r in rows])
    assert got == [(i, False) for i in ids], f"expected all False in input order, saw {got[:5]}..."
    owners = dict(db.execute("SELECT account_id, lease_owner FROM oauth_refreshd.account_state "
                             "WHERE account_id = ANY (%s)", (ids,)))
    assert all(owners[i] == "me" for i in ids[:150]), "our claims are kept for the re-check"
    assert all(owners[i] == "other" for i in ids[150:]), "other claims must be kept"
    assert len(events.payloads) == 300, "nothing written, nothing announced"


def test_application_write_after_store_refreshed_in_one_transaction_still_runs_the_trigger(
        migrated_env, seeder, db):
    a = seeder.add_account("google")
    b = seeder.add_account("google", expires_in=3600)
    lease(db, [a.id], "me")
    new_exp = whole_seconds(datetime.timedelta(hours=5))
    conn = db.conn()
    with conn.transaction():
        got = store_refreshed(conn, "me", [{"id": a.id, "old": ciphertext(db, a.id),
                                            "access": "at", "exp": new_exp}]).fetchall()
        assert got == [(a.id, True)], got
        conn.execute("UPDATE oauth_accounts SET expires_at = %s, refresh_token = 'app-rt' "
                     "WHERE id = %s", (new_exp, b.id))
    assert state(db, b.id)["due_at"] == new_exp, (
        f"the trigger must keep account_state in step with the application's write after the "
        f"daemon's in the same transaction: expected due_at {new_exp}, saw {state(db, b.id)}")


def test_store_revoked_marks_unchanged_rows_only_and_keeps_the_others_claims(
        migrated_env, seeder, db, events):
    hit = seeder.add_account("github")
    moved_mine = seeder.add_account("github")
    moved_theirs = seeder.add_account("google")
    lease(db, [hit.id, moved_mine.id], "me")
    lease(db, [moved_theirs.id], "other")
    got = db.execute("SELECT * FROM oauth_refreshd.store_revoked('me', %s::bigint[], %s::text[], "
                     "%s::text[])",
                     ([moved_mine.id, hit.id, moved_theirs.id],
                      ["stale", ciphertext(db, hit.id), "stale"],
                      ["invalid_grant", "bad_refresh_token", "invalid_grant"]))
    want = [(moved_mine.id, False), (hit.id, True), (moved_theirs.id, False)]
    assert got == want, f"expected {want} (input order), saw {got}"
    h = state(db, hit.id)
    assert (h["revoked"], h["due_at"], h["lease_owner"], h["last_error"], h["attempts"]) == (
        True, None, None, "bad_refresh_token", 1), h
    m = state(db, moved_mine.id)
    assert (m["revoked"], m["lease_owner"]) == (False, "me"), m  # kept for the re-check
    t = state(db, moved_theirs.id)
    assert (t["revoked"], t["lease_owner"]) == (False, "other"), t
    events.wait_for(count=1, timeout=10)
    time.sleep(0.2)
    assert events.payloads == [compact({"event": "revoked", "account_id": hit.id,
                                        "provider": "github", "error": "bad_refresh_token"})]


def test_next_wakeup_is_the_end_of_a_due_accounts_lease_when_nothing_else_is_claimable(
        migrated_env, seeder, db):
    a = seeder.add_account("google", expires_in=-60)
    seeder.add_account("google", expires_in=7200)
    lease(db, [a.id], "crashed", seconds=40)
    until = db.scalar("SELECT lease_until FROM oauth_refreshd.account_state WHERE account_id = %s",
                      (a.id,))
    got = db.scalar("SELECT oauth_refreshd.next_wakeup('{google,github,microsoft}', '5 min', '0')")
    assert got == until, f"expected the lease's end {until}, saw {got}"
    db.execute("UPDATE oauth_refreshd.account_state SET lease_owner = NULL, lease_until = NULL")
    got = db.scalar("SELECT oauth_refreshd.next_wakeup('{google,github,microsoft}', '5 min', '0') "
                    "<= now()")
    assert got is True, "an unleased overdue account is claimable now"


def nested_plans(db, sql):
    """The plans auto_explain logs for every statement sql runs, functions' bodies included."""
    conn = db.conn()
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET client_min_messages = log")
    conn.execute(sql)
    conn.execute("SET client_min_messages = notice")
    return [n for n in notices if "Query Text" in n or "Plan" in n or "Scan" in n]


def test_next_wakeup_walks_the_due_index_instead_of_scanning_the_whole_due_range(
        migrated_env, seeder, db):
    seeder.add_accounts(3000, "google", expires_in=-600)
    db.execute("ANALYZE oauth_accounts")  # as autovacuum would after such an insert
    db.execute("ANALYZE oauth_refreshd.account_state")
    plans = "\n".join(nested_plans(
        db, "SELECT oauth_refreshd.next_wakeup('{google,github,microsoft}', '5 min', '0')"))
    body = [p for p in plans.split("Query Text:") if "lease_until" in p]
    assert body, f"auto_explain logged no plan of next_wakeup's body:\n{plans}"
    for p in body:
        assert "Bitmap" not in p and "Seq Scan on account_state" not in p, (
            f"expected next_wakeup to walk account_state_due_idx in order, saw:\n{p}")
        assert "account_state_claim_idx" in p or "account_state_due_idx" in p, p
        assert "Sort" not in p and "Hash" not in p, (
            f"expected the due index walked in order with key lookups (no sort, no hash), "
            f"saw:\n{p}")
