"""Where PostgreSQL's time per refresh goes, and what one NOTIFY per account costs.

Owns: reading pg_stat_statements (track = all, so the statements inside the
daemon's SQL functions are listed too) after a measured run and printing each
statement's time per refresh; and a pgbench measurement of the event NOTIFYs
alone: the daemon's own event_refreshed() payloads for 500 accounts sent as one
pg_notify per account, as one pg_notify per batch (payloads joined by newlines,
split below the 8,000-byte payload limit), and built but not sent (the baseline),
with one listener connected (as the Django application's would be) whose backend's
CPU is counted too: every notification is delivered to every listener.
Must never: run against anything but the benchmark's own cluster.
"""

import re
import threading

import ceilings
import procstat

BATCH = 500
# ~90-byte payloads: 80 of them stay below NOTIFY's 8,000-byte limit.
PER_NOTIFY = 80

NOTIFY_SCRIPTS = {
    "built, not sent (baseline)":
        "SELECT count(oauth_refreshd.event_refreshed(g, 'google', now())) "
        f"FROM generate_series(1, {BATCH}) g;\n",
    "one pg_notify per account (what store_refreshed does)":
        "SELECT count(pg_notify('oauth_refresh_event', "
        "oauth_refreshd.event_refreshed(g, 'google', now()))) "
        f"FROM generate_series(1, {BATCH}) g;\n",
    f"one pg_notify per {PER_NOTIFY} accounts (payloads joined by newlines)":
        "SELECT count(pg_notify('oauth_refresh_event', p)) FROM ("
        "SELECT string_agg(oauth_refreshd.event_refreshed(g, 'google', now()), E'\\n') AS p "
        f"FROM generate_series(1, {BATCH}) g GROUP BY g / {PER_NOTIFY}) b;\n",
}


def statements(db, refreshed, out, limit=14):
    """Prints the statements PostgreSQL spent its time on, per refresh."""
    rows = db.execute(
        "SELECT toplevel, calls, total_exec_time, rows, query FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT ILIKE '%%pg_stat_statements%%' "
        "ORDER BY total_exec_time DESC LIMIT %s", (limit,))
    top = sum(r[2] for r in rows if r[0])
    out(f"PostgreSQL time by statement (pg_stat_statements, track = all; {refreshed:,} refreshed; "
        f"statements inside a function are also counted in the function's call; "
        f"top level total {top * 1000 / max(refreshed, 1):.1f} µs per refresh):")
    for toplevel, calls, total_ms, nrows, query in rows:
        q = re.sub(r"\s+", " ", query).strip()
        out(f"    {total_ms * 1000 / max(refreshed, 1):7.1f} µs/refresh  {calls:7,} calls  "
            f"{total_ms / max(calls, 1):7.2f} ms/call  {nrows:8,} rows  "
            f"{'top   ' if toplevel else 'nested'}  {q[:110]}")


class Listener:
    """LISTEN oauth_refresh_event on its own connection, drained by a thread."""

    def __init__(self, cluster, dbname):
        self.cluster, self.dbname = cluster, dbname
        self.conn = cluster.connect(dbname, autocommit=True)
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.conn.execute("LISTEN oauth_refresh_event")
        self.count = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._drain, daemon=True)
        self.t.start()

    def _drain(self):
        for _ in self.conn.notifies():  # psycopg 3.1: no timeout; close() sends a last one
            self.count += 1
            if self.stop.is_set():
                return

    def close(self):
        self.stop.set()
        with self.cluster.connect(self.dbname) as c:
            c.execute("NOTIFY oauth_refresh_event, 'bench: stop'")
        self.t.join(10)
        self.conn.close()


def notify_cost(cluster, dbname, workdir, out, transactions=200):
    """pgbench of the NOTIFY variants with one listener; prints µs per account of the
    sending transaction (wall time, one connection) and of the listener's backend."""
    res = {}
    lst = Listener(cluster, dbname)
    try:
        for name, script in NOTIFY_SCRIPTS.items():
            c0 = procstat.cpu_seconds(lst.pid)
            tps, txt = ceilings.pgbench(cluster, dbname, script, 1, transactions, workdir,
                                        "notify" + str(len(res)))
            lcpu = procstat.cpu_seconds(lst.pid) - c0
            n = transactions * BATCH
            res[name] = (1e6 / tps / BATCH if tps else None, lcpu / n * 1e6)
            if not tps:
                out(f"  {name}: pgbench failed: {txt[-300:]}")
    finally:
        received = lst.count
        lst.close()
    base = res.get("built, not sent (baseline)", (None, 0))[0]
    out(f"event NOTIFY cost (pgbench, 1 connection, {BATCH} accounts per transaction, the "
        f"daemon's event_refreshed() payloads, one listener: {received:,} notifications "
        f"received):")
    for name, (us, lus) in res.items():
        if us is None:
            continue
        extra = f" ({us - base:+.1f} µs over the baseline)" if base is not None and us != base else ""
        out(f"    {us:6.1f} µs per account in the sender{extra}, {lus:5.1f} µs in the "
            f"listener's backend  {name}")
    return res
