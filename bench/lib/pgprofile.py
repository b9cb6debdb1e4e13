"""Where PostgreSQL's time per refresh goes, and what one NOTIFY per account costs.

Owns: reading pg_stat_statements (track = all, so the statements inside the
daemon's SQL functions are listed too) after a measured run and printing each
statement's time per refresh; and a pgbench measurement of the event NOTIFYs
alone: the daemon's own event_refreshed() payloads for 500 accounts sent as one
pg_notify per account, as one pg_notify per batch (payloads joined by newlines,
split below the 8,000-byte payload limit), and built but not sent (the baseline).
Must never: run against anything but the benchmark's own cluster.
"""

import re

import ceilings

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


def notify_cost(cluster, dbname, workdir, out, transactions=200):
    """pgbench of the NOTIFY variants (no listener); prints µs per account."""
    res = {}
    for name, script in NOTIFY_SCRIPTS.items():
        tps, txt = ceilings.pgbench(cluster, dbname, script, 1, transactions, workdir,
                                    "notify" + str(len(res)))
        res[name] = 1e6 / tps / BATCH if tps else None
        if not tps:
            out(f"  {name}: pgbench failed: {txt[-300:]}")
    base = res.get("built, not sent (baseline)")
    out(f"event NOTIFY cost (pgbench, 1 connection, {BATCH} accounts per transaction, "
        f"the daemon's event_refreshed() payloads, no listener):")
    for name, us in res.items():
        if us is None:
            continue
        extra = f" ({us - base:+.1f} µs over the baseline)" if base is not None and us != base else ""
        out(f"    {us:6.1f} µs per account  {name}{extra}")
    return res
