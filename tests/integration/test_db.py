"""The asynchronous PostgreSQL connection (src/db.c), proven against a real server.

Drives $OAUTH_BUILD_DIR/tests/tools/db_probe (one db connection on a libev loop,
commanded on stdin, reporting JSON lines) against the shared throwaway cluster:
pipelined statements answered in order and exactly once, errors confined to
their statement, LISTEN/NOTIFY, and every way a connection can go away.
"""

import json
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
