#!/usr/bin/python3
"""The oauth-refreshd benchmark (bench/run is the one command; see bench/README.md).

Owns the phases and the report: `once` (seed N due accounts, measure the token
endpoint's and PostgreSQL's ceilings, print the claim and due-query plans, run
`oauth-refreshd --once` and print refreshes/s, CPU µs per refresh, peak RSS and
claim-to-written latency), `memory` (peak RSS of --once with 10k and with 1M
accounts in the table), `continuous` (accounts becoming due at a steady rate,
answers after 200 ms, lateness of the refreshes against their due time) and
`profile` (perf, else callgrind, on a --once run). Each phase builds its own
throwaway world (bench/lib/world.py) and removes it.
Must never: touch anything outside its temporary directory and loopback, or
print a token.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

from psycopg import sql as psycopg_sql

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ceilings  # noqa: E402
import migrate_phase  # noqa: E402
import pgprofile  # noqa: E402
import procstat  # noqa: E402
import runner  # noqa: E402
import seedbulk  # noqa: E402
from world import CLIENTS, LEAD_S, ROOT, World  # noqa: E402
from lib.daemon import sanitizer_build  # noqa: E402  (tests/integration, via world)

# Issue 12's targets on the 2-core benchmark machine.
TARGET_RATE = 8000         # refreshes per second, --once 100k
STRETCH_RATE = 10000
TARGET_CPU_US = 90         # daemon CPU per refresh
TARGET_PG_US = 70          # PostgreSQL CPU per refresh
TARGET_RSS_MB = 48
TARGET_RSS_SPREAD_MB = 3   # peak RSS from 10k to 1M accounts
TARGET_LATE_P99_S = 1.0


def out(line=""):
    print(line, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def verdict(ok):
    return "MET" if ok else "NOT MET"


def machine_text():
    lines = [f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"nproc: {os.cpu_count()}"]
    try:
        ls = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        for key in ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor"):
            m = re.search(rf"^{re.escape(key)}:\s+(.*)$", ls, re.M)
            if m:
                lines.append(f"{key}: {m.group(1)}")
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
    lines.append(f"memory: {kb / 1024 / 1024:.1f} GiB")
    lines.append(f"kernel: {platform.release()}")
    for cmd in (["nginx", "-v"], ["psql", "--version"], ["curl", "--version"]):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines.append(p.stdout.splitlines()[0].strip())
        except OSError:
            pass
    return lines


# ---- plans ---------------------------------------------------------------------------------

def function_body_plan(db, fname, argtypes, args):
    """EXPLAIN ANALYZE of a SQL function's body with its parameters bound (inside a
    transaction that is rolled back: the claim really claims)."""
    src = db.scalar("SELECT prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = 'oauth_refreshd' AND p.proname = %s", (fname,))
    names = re.findall(r"\b(p_[a-z_]+)\b", db.scalar(
        "SELECT pg_get_function_arguments(p.oid) FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = 'oauth_refreshd' AND p.proname = %s",
        (fname,)))
    names = list(dict.fromkeys(names))
    body = src
    for i, n in enumerate(names, 1):
        body = re.sub(rf"\b{n}\b", f"${i}", body)
    config = db.scalar("SELECT proconfig FROM pg_proc p JOIN pg_namespace n "
                       "ON n.oid = p.pronamespace WHERE n.nspname = 'oauth_refreshd' "
                       "AND p.proname = %s", (fname,)) or []
    conn = db.conn(autocommit=False)
    try:
        for setting in config:  # the function's own SET clauses (planner settings)
            name, _, value = setting.partition("=")
            conn.execute(psycopg_sql.SQL("SELECT set_config({}, {}, true)").format(
                psycopg_sql.Literal(name), psycopg_sql.Literal(value)))
        conn.execute(f"PREPARE bench_plan ({', '.join(argtypes)}) AS {body}")
        q = psycopg_sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING ON, SUMMARY ON) "
                            "EXECUTE bench_plan ({})").format(
            psycopg_sql.SQL(", ").join(psycopg_sql.Literal(a) for a in args))
        rows = conn.execute(q).fetchall()
        return [r[0] for r in rows]
    finally:
        conn.rollback()
        conn.close()


def print_plans(db):
    provs = "{google,github,microsoft}"
    out("EXPLAIN ANALYZE of the claim (oauth_refreshd.claim_due body, limit 500, rolled back; "
        "after the run, nothing due):")
    for line in function_body_plan(
            db, "claim_due",
            ["text", "text[]", "interval", "interval", "interval", "integer", "timestamptz"],
            ["bench-explain", provs, f"{LEAD_S} s", "0 s", "70 s", 500, None]):
        out("    " + line)
    out("EXPLAIN ANALYZE of the due query (oauth_refreshd.next_wakeup body):")
    for line in function_body_plan(db, "next_wakeup", ["text[]", "interval", "interval"],
                                   [provs, f"{LEAD_S} s", "0 s"]):
        out("    " + line)


def plans_use_indexes(db):
    """The claim and the due query find due accounts through account_state_claim_idx and
    read no table sequentially. (next_wakeup's search for the earliest running lease
    is reported separately: it has no index of its own.)"""
    claim = "\n".join(function_body_plan(
        db, "claim_due", ["text", "text[]", "interval", "interval", "interval", "integer",
                          "timestamptz"],
        ["bench-explain", "{google,github,microsoft}", f"{LEAD_S} s", "0 s", "70 s", 500, None]))
    due = "\n".join(function_body_plan(db, "next_wakeup", ["text[]", "interval", "interval"],
                                       ["{google,github,microsoft}", f"{LEAD_S} s", "0 s"]))
    due_first = due.split("InitPlan 2")[0]
    return ("account_state_claim_idx" in claim and "Seq Scan" not in claim
            and "account_state_claim_idx" in due_first and "Seq Scan" not in due_first)


def print_claim_plan(db, provider="github"):
    """The claim as the daemon makes it (one provider), on the table as it is."""
    out(f"EXPLAIN ANALYZE of a claim of 500 {provider} accounts (claim_due body, rolled back):")
    for line in function_body_plan(
            db, "claim_due",
            ["text", "text[]", "interval", "interval", "interval", "integer", "timestamptz"],
            ["bench-explain", "{" + provider + "}", f"{LEAD_S} s", "0 s", "70 s", 500, None]):
        out("    " + line)


# ---- phases ------------------------------------------------------------------------------------

def daemon_paths(build_dir):
    return os.path.join(build_dir, "oauth-refreshd"), os.path.join(build_dir, "oauth-refreshctl")


def make_world(args, delay_s=0.2, stat_statements=False):
    os.environ["OAUTH_BUILD_DIR"] = args.build_dir
    return World(keep=args.keep, nginx_workers=args.nginx_workers, delay_s=delay_s,
                 stat_statements=stat_statements)


def seed_due(world, n, name, in_flight=1000):
    world.new_database(name)
    env = world.make_env(kind="h2", max_in_flight=in_flight)
    # Every account expired up to 10 minutes ago or expires within the lead time: all due.
    secs = world.seed(n, "now() - ((g % 900) - 240) * interval '1 second'")
    mig = world.migrate()
    out(f"seeded {n:,} accounts (google/github/microsoft in turn, all due) in {secs:.1f}s; "
        f"migrate + VACUUM ANALYZE {mig:.1f}s")
    return env


def run_once(world, env, args, wrapper=(), log_name="once.log"):
    daemon, _ = daemon_paths(args.build_dir)
    postmaster = world.postmaster_pid()
    return runner.run_daemon(daemon, env.config_path, os.path.join(world.dir, log_name),
                             args=["--once"], wrapper=wrapper,
                             watch_pids=lambda: procstat.children(postmaster),
                             nginx=world.nginx, timeout=args.timeout)


def report_once(r, n, label, latency=True, who="daemon"):
    cnt = r.refreshed or {}
    done = cnt.get("refreshed", 0)
    rate = done / r.wall if r.wall > 0 else 0
    cpu = r.user + r.sys
    us = cpu / done * 1e6 if done else float("nan")
    out(f"{label}: exit {r.rc}; {done:,} refreshed, {cnt.get('failed', '?')} failed, "
        f"{cnt.get('revoked', '?')} revoked of {n:,} in {r.wall:.2f}s")
    out(f"  throughput            {rate:,.0f} refreshes/s")
    out(f"  {who + ' CPU':21s} {r.user:.2f}s user + {r.sys:.2f}s sys = {us:.1f} µs per refresh "
        f"({cpu / r.wall * 100:.0f}% of one core)")
    anon, fil = getattr(r, "peak_split", (None, None))
    out(f"  {who + ' peak RSS':21s} {r.maxrss_kb / 1024:.1f} MB"
        + (f" (near the peak: {anon / 1024:.1f} MB anonymous, {fil / 1024:.1f} MB of "
           f"mapped files such as the libraries)" if anon and fil else ""))
    out(f"  PostgreSQL CPU        {r.pg_cpu:.2f}s ({r.pg_cpu / max(done, 1) * 1e6:.1f} µs per refresh, "
        f"{r.pg_cpu / r.wall * 100:.0f}% of one core)")
    out(f"  nginx CPU             {r.nginx_cpu:.2f}s ({r.nginx_cpu / max(done, 1) * 1e6:.1f} µs per "
        f"refresh, {r.nginx_cpu / r.wall * 100:.0f}% of one core)")
    if r.latency:
        lat = r.latency
        out(f"  claim to written      p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
            f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms (reported by the daemon)")
    elif latency:
        out("  claim to written      not reported by this build (the daemon logs no latency "
            "summary)")
    if r.rc != 0 or done != n:
        tail = "\n".join(r.log.splitlines()[-15:])
        out(f"  WARNING: not every account was refreshed; log tail:\n{tail}")
    return rate, us


def report_function_stats(db, rows):
    """How the daemon batched its database work (pg_stat_user_functions)."""
    stats = db.execute("SELECT funcname, calls, total_time FROM pg_stat_user_functions "
                       "WHERE schemaname = 'oauth_refreshd' AND funcname IN "
                       "('claim_due', 'store_refreshed', 'store_failed', 'store_revoked', "
                       "'next_wakeup', 'release', 'claim_ids') ORDER BY funcname")
    for name, calls, total_ms in stats:
        out(f"  {name + '()':21s} {calls:,} calls, {rows / max(calls, 1):.0f} accounts per call, "
            f"{total_ms / max(calls, 1):.1f} ms per call, {total_ms * 1000 / max(rows, 1):.1f} µs "
            f"per account in the function")


def once_figures(r, n, rate, us):
    """One --once run's figures, as the targets and the repeats read them."""
    return {"rate": rate, "us": us, "rss_mb": r.maxrss_kb / 1024, "rc": r.rc,
            "complete": (r.refreshed or {}).get("refreshed") == n,
            "pg_us": r.pg_cpu / max(n, 1) * 1e6, "nginx_us": r.nginx_cpu / max(n, 1) * 1e6}


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def repeat_once(w, args, n, first):
    """--repeat: the same --once run again on freshly seeded databases of the same world.
    One run's daemon CPU moves by +-5 µs and its peak RSS by +-3 MB from run to run on this
    2-core machine (the peak follows how many transfers are in curl at that moment), so the
    targets are judged on the medians; each run's figures are printed."""
    runs = [first]
    for i in range(2, args.repeat + 1):
        out(f"-- run {i} of {args.repeat}: the same, on a freshly seeded database --")
        env = seed_due(w, n, f"bench_r{i}", args.in_flight)
        r = run_once(w, env, args, log_name=f"once-{i}.log")
        rate, us = report_once(r, n, f"oauth-refreshd --once (run {i})")
        runs.append(once_figures(r, n, rate, us))
    res = dict(first)
    out(f"-- {len(runs)} runs: median (min-max) --")
    for key, label, unit, fmt in (("rate", "throughput", "refreshes/s", "{:,.0f}"),
                                  ("us", "daemon CPU", "µs per refresh", "{:.1f}"),
                                  ("pg_us", "PostgreSQL CPU", "µs per refresh", "{:.1f}"),
                                  ("nginx_us", "nginx CPU", "µs per refresh", "{:.1f}"),
                                  ("rss_mb", "daemon peak RSS", "MB", "{:.1f}")):
        xs = [x[key] for x in runs]
        res[key] = median(xs)
        out(f"  {label:21s} {fmt.format(res[key])} {unit} ("
            f"{fmt.format(min(xs))}-{fmt.format(max(xs))})")
    res["rc"] = max(x["rc"] for x in runs)
    res["complete"] = all(x["complete"] for x in runs)
    res["runs"] = len(runs)
    return res


def phase_once(args):
    n = args.accounts
    out(f"== --once, {n:,} accounts, max_in_flight {args.in_flight}, HTTP/2 ==")
    out(f"load average before: {loadavg()}")
    w = make_world(args)
    try:
        env = seed_due(w, n, "bench", args.in_flight)
        ceil = {}
        if not args.skip_ceilings:
            out("ceilings (each measured alone, in this run, on this machine):")
            rps, note = ceilings.h2load(w.nginx.token_url("google", "h2"), seconds=args.ceiling_s,
                                        workdir=w.dir)
            ceil["h2"] = rps
            out(f"  nginx alone, HTTP/2 (h2load, {note}): "
                + (f"{rps:,.0f} requests/s" if rps else "n/a"))
            rps, note = ceilings.wrk(w.nginx.token_url("google", "h1"), seconds=args.ceiling_s,
                                     workdir=w.dir)
            ceil["h1"] = rps
            out(f"  nginx alone, HTTP/1.1 (wrk, {note}): "
                + (f"{rps:,.0f} requests/s" if rps else "n/a"))
            w.db.close()  # CREATE DATABASE ... TEMPLATE needs it alone
            pgc = ceilings.pg_ceilings(w.cluster, w.db.name, n, w.dir)
            for name, (rows, note) in pgc.items():
                out(f"  PostgreSQL alone, {name}: "
                    + (f"{rows:,.0f} accounts/s" if rows else f"n/a {note[-300:]}"))
                if "1 connection" in name and name.startswith("claim_due"):
                    ceil["pg"] = rows
        r = run_once(w, env, args)
        rate, us = report_once(r, n, "oauth-refreshd --once")
        if ceil:
            parts = []
            if ceil.get("h2"):
                parts.append(f"{rate / ceil['h2'] * 100:.0f}% of nginx's HTTP/2 ceiling")
            if ceil.get("pg"):
                parts.append(f"{rate / ceil['pg'] * 100:.0f}% of PostgreSQL's claim+write "
                             f"ceiling on one connection")
            out("  ratio                 " + "; ".join(parts))
        rows = w.db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                           "WHERE last_refreshed_at IS NOT NULL")
        out(f"  rows marked refreshed {rows:,} (database check)")
        report_function_stats(w.db, rows)
        # The plans in the state a real system is in (a small part of the table due),
        # here: right after the run, every account fresh again.
        w.db.execute("ANALYZE")
        print_plans(w.db)
        idx_ok = plans_use_indexes(w.db)
        res = dict(once_figures(r, n, rate, us), indexes=idx_ok, n=n)
        if args.repeat > 1:
            res = repeat_once(w, args, n, res)
        if "peer" in args.phases:
            res["peer"] = peer_run(w, args, n, res)
        return res
    finally:
        w.destroy()


# ---- the Python peer (issue 12 §4) -------------------------------------------------------------

PEER = os.path.join(ROOT, "bench", "peer", "refresher.py")


def peer_config(world, args):
    """The peer's JSON config: the same database, keys, CA, endpoint (nginx's HTTP/2 port,
    which the peer's aiohttp reaches over HTTP/1.1 through ALPN), clients and limits as
    the daemon's."""
    cfg = {"dsn": world.db.dsn, "keys_file": world.env.keys_file, "ca_file": world.pki.ca_file,
           "in_flight": args.in_flight, "batch_size": 500, "lead_s": LEAD_S, "lease_s": 70,
           "providers": {}}
    for p in seedbulk.PROVIDERS:
        cid, secret = CLIENTS[p]
        cfg["providers"][p] = {"token_url": world.nginx.token_url(p, "h2").replace(
            "{tenant}", "common"), "client_id": cid, "client_secret": secret}
    path = os.path.join(world.dir, "peer.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    return path


def peer_run(world, args, n, daemon=None):
    """Re-seeds the same N accounts in a fresh database of the same cluster, runs the
    Python peer against the same nginx, reports it like the daemon and, when the
    daemon's figures are given, the ratios."""
    out(f"-- the Python peer (bench/peer/refresher.py: asyncio, aiohttp over HTTP/1.1 to the "
        f"same nginx port, psycopg 3, MultiFernet), {n:,} accounts re-seeded, "
        f"{args.in_flight} in flight --")
    seed_due(world, n, "bench_peer", args.in_flight)
    cfg = peer_config(world, args)
    postmaster = world.postmaster_pid()
    r = runner.run_daemon(None, None, os.path.join(world.dir, "peer.log"),
                          command=["/usr/bin/python3", PEER, cfg],
                          watch_pids=lambda: procstat.children(postmaster), nginx=world.nginx,
                          timeout=args.timeout)
    rate, us = report_once(r, n, "python peer --once", latency=False, who="peer")
    rows = world.db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                           "WHERE last_refreshed_at IS NOT NULL")
    out(f"  rows marked refreshed {rows:,} (database check)")
    res = {"rate": rate, "us": us, "rss_mb": r.maxrss_kb / 1024, "rc": r.rc,
           "complete": (r.refreshed or {}).get("refreshed") == n and rows == n,
           "pg_us": r.pg_cpu / max(n, 1) * 1e6, "nginx_us": r.nginx_cpu / max(n, 1) * 1e6}
    if daemon:
        ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"  # noqa: E731
        out("  daemon / peer         "
            f"refreshes/s {ratio(daemon['rate'], rate)}x; "
            f"own CPU per refresh {ratio(daemon['us'], us)}x ({daemon['us']:.0f} vs {us:.0f} µs); "
            f"PostgreSQL CPU per refresh {ratio(daemon['pg_us'], res['pg_us'])}x "
            f"({daemon['pg_us']:.0f} vs {res['pg_us']:.0f} µs); "
            f"nginx CPU per refresh {ratio(daemon['nginx_us'], res['nginx_us'])}x; "
            f"peak RSS {ratio(daemon['rss_mb'], res['rss_mb'])}x "
            f"({daemon['rss_mb']:.1f} vs {res['rss_mb']:.1f} MB)")
    return res


def phase_peer(args):
    """The peer alone (`bench/run peer`), in its own world."""
    n = args.accounts
    out(f"== the Python peer alone, {n:,} accounts ==")
    w = make_world(args)
    try:
        return peer_run(w, args, n)
    finally:
        w.destroy()


MEMORY_RATES = {}  # accounts -> refreshes/s of the memory phase's --once runs


def backlog_ratio_line(once):
    """--once over the largest backlog the memory phase ran (1,000,000 by default) against
    the once phase's rate (100,000): issue 12 asks for >= 90 %."""
    if not once or not MEMORY_RATES:
        return None
    big = max(MEMORY_RATES)
    if big <= once["n"] or not once["rate"]:
        return None
    pct = MEMORY_RATES[big] / once["rate"] * 100
    return (f"  --once {big:,} vs {once['n']:,}: {MEMORY_RATES[big]:,.0f} vs {once['rate']:,.0f} "
            f"refreshes/s = {pct:.0f}% (>= 90%) -> {verdict(pct >= 90)}")


# ---- HTTP/2 vs HTTP/1.1 (issue 12 §3) --------------------------------------------------------

def phase_http(args):
    """--once twice against the same nginx port (it offers h2 and http/1.1 through ALPN),
    each on a freshly seeded database of the same size: [http] http_version = 2 (one
    multiplexed connection) and = 1.1 (a pool of up to max_in_flight kept-alive
    connections). Prints each run and the comparison."""
    n = args.accounts
    out(f"== HTTP/2 vs HTTP/1.1: --once, {n:,} accounts each, max_in_flight {args.in_flight}, "
        f"the same nginx port ==")
    out(f"load average before: {loadavg()}")
    w = make_world(args)
    res = {}
    try:
        for version in ("2", "1.1"):
            w.new_database(f"bench_http_{version.replace('.', '')}")
            env = w.make_env(kind="h2", max_in_flight=args.in_flight, http_version=version)
            w.seed(n, "now() - ((g % 900) - 240) * interval '1 second'")
            w.migrate()
            r = run_once(w, env, args, log_name=f"http-{version}.log")
            rate, us = report_once(r, n, f"oauth-refreshd --once, http_version = {version}")
            res[version] = {"rate": rate, "us": us, "rss_mb": r.maxrss_kb / 1024,
                            "pg_us": r.pg_cpu / max(n, 1) * 1e6,
                            "nginx_us": r.nginx_cpu / max(n, 1) * 1e6}
        a, b = res["2"], res["1.1"]
        out(f"  HTTP/2 vs HTTP/1.1    refreshes/s {a['rate']:,.0f} vs {b['rate']:,.0f}; daemon "
            f"{a['us']:.0f} vs {b['us']:.0f} µs; nginx {a['nginx_us']:.0f} vs "
            f"{b['nginx_us']:.0f} µs; PostgreSQL {a['pg_us']:.0f} vs {b['pg_us']:.0f} µs per "
            f"refresh; peak RSS {a['rss_mb']:.1f} vs {b['rss_mb']:.1f} MB")
        ca, cb = a["us"] + a["nginx_us"], b["us"] + b["nginx_us"]
        if abs(ca - cb) <= 0.05 * max(ca, cb):
            out(f"  daemon + nginx CPU per refresh {ca:.0f} vs {cb:.0f} µs: the same within 5% "
                f"(noise on a shared machine); the default stays http_version = 2, which "
                f"needs one connection instead of {args.in_flight} and their TLS memory")
        else:
            out(f"  daemon + nginx CPU per refresh {ca:.0f} vs {cb:.0f} µs: cheaper is "
                f"http_version = {'2' if ca < cb else '1.1'}")
        return res
    finally:
        w.destroy()


def phase_memory(args):
    res = {}
    for n in args.memory_sizes:
        out(f"== memory: --once with {n:,} accounts in the table, max_in_flight "
            f"{args.in_flight} ==")
        out(f"load average before: {loadavg()}")
        w = make_world(args)
        try:
            env = seed_due(w, n, "bench_mem", args.in_flight)
            r = run_once(w, env, args, log_name=f"mem-{n}.log")
            rate, _ = report_once(r, n, f"oauth-refreshd --once ({n:,} accounts)")
            res[n] = r.maxrss_kb / 1024
            MEMORY_RATES[n] = rate
        finally:
            w.destroy()
    return res


def phase_continuous(args):
    rate, dur = args.rate, args.duration
    n = int(rate * dur)
    table = max(n, args.table_accounts)
    delay = args.delay_ms / 1000.0
    out(f"== continuous: {rate:,}/s become due for {dur}s ({n:,} accounts of a table of "
        f"{table:,}), answers after {args.delay_ms} ms, HTTP/2 ==")
    out(f"load average before: {loadavg()}")
    w = make_world(args, delay_s=delay)
    try:
        if w.nginx.slow_port is None:
            out("nginx's echo module is missing (Debian: libnginx-mod-http-echo): skipped")
            return None
        w.new_database("bench_cont")
        env = w.make_env(kind="slow", max_in_flight=args.in_flight)
        t = time.monotonic()
        continuous_seed(w, n, table, rate)
        out(f"seeded {table:,} accounts ({n:,} in the stream, {table - n:,} due after it) in "
            f"{time.monotonic() - t:.1f}s")
        margin = 25 + table / 50000.0
        w.db.execute("UPDATE oauth_accounts SET expires_at = expires_at - '2100-01-01'::timestamptz "
                     "+ now() + %s * interval '1 second' WHERE id <= %s", (margin + LEAD_S, n))
        w.db.execute("CREATE TABLE bench_due AS SELECT id, expires_at - %s * interval '1 second' "
                     "AS due FROM oauth_accounts WHERE id <= %s", (LEAD_S, n))
        w.db.execute("ALTER TABLE bench_due ADD PRIMARY KEY (id)")
        w.migrate()
        first_due, last_due = w.db.execute("SELECT min(due), max(due) FROM bench_due")[0]
        now_db = w.db.scalar("SELECT now()")
        start_in = (first_due - now_db).total_seconds()
        out(f"the first account becomes due in {start_in:.1f}s; the stream lasts {dur}s")
        daemon, _ = daemon_paths(args.build_dir)
        postmaster = w.postmaster_pid()
        stop_after = start_in + dur + 5
        r = runner.run_daemon(daemon, env.config_path, os.path.join(w.dir, "continuous.log"),
                              watch_pids=lambda: procstat.children(postmaster), nginx=w.nginx,
                              stop_after=stop_after, rss_interval=1.0, timeout=stop_after + 120)
        warm = 10.0
        rows = w.db.execute(
            """
            WITH m AS (
                SELECT d.due,
                       CASE WHEN s.last_refreshed_at IS NOT NULL
                            THEN extract(epoch FROM a.updated_at - d.due) END AS late
                  FROM bench_due d JOIN oauth_accounts a USING (id)
                  JOIN oauth_refreshd.account_state s ON s.account_id = d.id
                 WHERE d.due >= %(lo)s AND d.due <= %(hi)s)
            SELECT count(*), count(late),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY COALESCE(late, 1e9)),
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY COALESCE(late, 1e9)),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY COALESCE(late, 1e9)),
                   max(late), min(late)
              FROM m""",
            {"lo": first_due + datetime.timedelta(seconds=warm), "hi": last_due})
        total, done, p50, p90, p99, mx, mn = rows[0]
        cnt = r.refreshed or {}
        cpu = r.user + r.sys
        out(f"oauth-refreshd (continuous, SIGTERM after {stop_after:.0f}s): exit {r.rc}; "
            f"{cnt.get('refreshed', '?')} refreshed, {cnt.get('failed', '?')} failed")
        out(f"  lateness vs due time  (accounts due in the window after a {warm:.0f}s warm-up: "
            f"{total:,}, refreshed {done:,})")
        fmt = lambda v: "never" if v is None or v >= 1e8 else f"{v * 1000:.0f} ms"  # noqa: E731
        windows = w.db.execute(
            """
            SELECT floor(extract(epoch FROM d.due - %(t0)s) / 10) * 10 AS w, count(*),
                   count(s.last_refreshed_at),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY CASE WHEN
                       s.last_refreshed_at IS NOT NULL THEN extract(epoch FROM
                       a.updated_at - d.due) ELSE 1e9 END),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY CASE WHEN
                       s.last_refreshed_at IS NOT NULL THEN extract(epoch FROM
                       a.updated_at - d.due) ELSE 1e9 END)
              FROM bench_due d JOIN oauth_accounts a USING (id)
              JOIN oauth_refreshd.account_state s ON s.account_id = d.id
             GROUP BY 1 ORDER BY 1""", {"t0": first_due})
        out("  lateness by due time  (never = some accounts of that window were not "
            "refreshed before the stop)")
        for wn, cnt_w, done_w, a50, a99 in windows:
            out(f"    due {int(wn):4d}-{int(wn) + 10:4d}s: {done_w:,}/{cnt_w:,} refreshed, "
                f"p50 {fmt(a50)}, p99 {fmt(a99)}")
        out(f"                        p50 {fmt(p50)}, p90 {fmt(p90)}, p99 {fmt(p99)}, "
            f"max {fmt(mx)}, min {fmt(mn)}")
        out("                        (lateness = updated_at of the write minus expires_at - "
            "lead_time; it includes the 200 ms answer)")
        samples = getattr(r, "rss_samples", [])
        steady = [kb for (t, kb) in samples if start_in + warm <= t <= start_in + dur]
        out(f"  daemon peak RSS       {r.maxrss_kb / 1024:.1f} MB; steady state VmRSS "
            + (f"{min(steady) / 1024:.1f}-{max(steady) / 1024:.1f} MB" if steady else "n/a"))
        busy = max(dur, 1)
        out(f"  daemon CPU            {cpu:.2f}s over {r.wall:.0f}s ({cpu / busy * 100:.0f}% of one core "
            f"while the stream ran; {cpu / max(cnt.get('refreshed', 1), 1) * 1e6:.0f} µs per refresh)")
        out(f"  PostgreSQL CPU        {r.pg_cpu:.2f}s; nginx CPU {r.nginx_cpu:.2f}s")
        if r.latency:
            lat = r.latency
            out(f"  claim to written      p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
                f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms (reported by the daemon)")
        report_function_stats(w.db, cnt.get("refreshed", 0) or 1)
        return {"p50": p50, "p99": p99, "done": done, "total": total,
                "rss_mb": r.maxrss_kb / 1024, "table": table}
    finally:
        w.destroy()


def continuous_seed(w, n, table, rate):
    """Accounts 1..n become due at `rate` per second (placeholder expiry in 2100, shifted
    to real times just before the run); n+1..table are the rest of a large deployment's
    table: expiring in 2101 (not shifted: never due during the run), spread over a
    day, so that every claim and due query works on a table of that size."""
    w.seed(table, f"CASE WHEN g <= {n} THEN '2100-01-01'::timestamptz + (g - 1) * "
                  f"interval '1 microsecond' * {1e6 / rate:.6f} ELSE '2101-01-01'::timestamptz "
                  f"+ (g % 86400) * interval '1 second' END")


def print_perf_report(perf, data, title, how):
    """Prints the first 40 rows of one `perf report` view of the daemon's samples."""
    rep = subprocess.run([perf, "report", "-i", data, "--stdio", "-g", "none",
                          "--comm", "oauth-refreshd"] + how,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    out(title)
    for ln in lines[:40]:
        out("    " + ln.strip())


def callgrind_argv(data):
    """The wrapper that runs the daemon under callgrind, its counts written to data."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={data}"]


def callgrind_self_counts(data):
    """callgrind_annotate's report of data: the program total, then functions by self count."""
    return subprocess.run(["callgrind_annotate", "--inclusive=no", data], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True).stdout


def phase_profile(args):
    n = args.profile_accounts
    perf = shutil.which("perf")
    use_perf = False
    if perf:
        p = subprocess.run([perf, "record", "-e", "cpu-clock", "-o", "/dev/null", "true"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        use_perf = p.returncode == 0
    tool = "perf record -e cpu-clock" if use_perf else "valgrind --tool=callgrind"
    out(f"== profile: --once, {n:,} accounts, under {tool} ==")
    w = make_world(args, stat_statements=True)
    try:
        env = seed_due(w, n, "bench_prof", args.in_flight)
        w.db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        w.db.execute("SELECT pg_stat_statements_reset()")
        if use_perf:
            data = os.path.join(w.dir, "perf.data")
            wrapper = [perf, "record", "-e", "cpu-clock", "-F", "2000", "-g", "--call-graph",
                       "dwarf,16384", "-o", data, "--"]
        else:
            data = os.path.join(w.dir, "callgrind.out")
            wrapper = callgrind_argv(data)
        r = run_once(w, env, args, wrapper=wrapper, log_name="profile.log")
        out(f"profiled run: exit {r.rc}, {(r.refreshed or {}).get('refreshed', '?')} refreshed in "
            f"{r.wall:.1f}s (slowed down by the profiler)")
        done = (r.refreshed or {}).get("refreshed", 0)
        out(f"PostgreSQL CPU {r.pg_cpu / max(done, 1) * 1e6:.1f} µs per refresh (all backends, "
            f"/proc)")
        pgprofile.statements(w.db, done, out)
        report_function_stats(w.db, done)
        pgprofile.notify_cost(w.cluster, w.db.name, w.dir, out)
        if use_perf:
            print_perf_report(perf, data, "top self-time symbols of the daemon (perf, % of the "
                              "daemon's samples):",
                              ["--no-children", "--sort", "dso,symbol", "--percent-limit", "0.7"])
            print_perf_report(perf, data, "inclusive time (callee trees), top entries:",
                              ["--children", "--sort", "symbol", "--percent-limit", "3"])
            if args.keep:
                out(f"perf data kept in {data}")
        else:
            for ln in callgrind_self_counts(data).splitlines()[:60]:
                out("    " + ln)
    finally:
        w.destroy()


def phase_instructions(args):
    """The daemon's instructions per refresh under callgrind: unlike CPU seconds, the same
    for the same binary and inputs whatever else the machine is doing, so two trees can be
    compared a few percent apart. The batching (and so a little of the count) still
    follows the timing."""
    n = args.instructions_accounts
    if sanitizer_build(args.build_dir):
        out(f"== instructions: skipped: {args.build_dir} is a sanitizer build "
            f"(ASan/UBSan or fuzzing), which valgrind cannot run ==")
        return None
    out(f"== instructions: --once, {n:,} accounts, under valgrind --tool=callgrind ==")
    w = make_world(args)
    try:
        env = seed_due(w, n, "bench_ir", args.in_flight)
        data = os.path.join(w.dir, "callgrind.out")
        r = run_once(w, env, args, wrapper=callgrind_argv(data), log_name="instructions.log")
        done = (r.refreshed or {}).get("refreshed", 0)
        report = callgrind_self_counts(data)
        m = re.search(r"^\s*([\d,]+)\s.*PROGRAM TOTALS", report, re.M)
        total = int(m.group(1).replace(",", "")) if m else 0
        per = total / done if done else float("nan")
        out(f"run under callgrind: exit {r.rc}, {done:,} refreshed; {total:,} instructions, "
            f"{per:,.0f} per refresh (start-up and exit included)")
        if r.rc != 0 or done != n:
            tail = "\n".join(r.log.splitlines()[-25:])
            out(f"  WARNING: not every account was refreshed; log tail:\n{tail}")
        lines = [ln for ln in report.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
        out("  the largest self counts:")
        for ln in lines[1:16]:
            out("    " + ln.strip())
        return {"per": per, "done": done, "rc": r.rc}
    finally:
        w.destroy()


def phase_heap(args):
    """Where the daemon's peak heap goes: --once under heaptrack, its peak consumers."""
    n = args.profile_accounts
    ht = shutil.which("heaptrack")
    out(f"== heap: --once, {n:,} accounts, {args.in_flight} in flight, under heaptrack ==")
    if not ht:
        out("heaptrack is not installed (Debian package heaptrack; bench/run installs it)")
        return
    w = make_world(args)
    try:
        env = seed_due(w, n, "bench_heap", args.in_flight)
        data = os.path.join(w.dir, "heaptrack")
        r = run_once(w, env, args, wrapper=[ht, "-o", data], log_name="heap.log")
        out(f"run under heaptrack: exit {r.rc}, {(r.refreshed or {}).get('refreshed', '?')} "
            f"refreshed in {r.wall:.1f}s")
        files = [f for f in os.listdir(w.dir)
                 if f.startswith("heaptrack") and f.endswith((".zst", ".gz"))]
        if not files:
            out("heaptrack wrote no data")
            return
        rep = subprocess.run(["heaptrack_print", "--print-peaks", "1", "--print-allocators", "0",
                              "--print-temporary", "0", "--print-leaks", "0",
                              "--peak-limit", "12", "--sub-peak-limit", "4",
                              os.path.join(w.dir, sorted(files)[0])],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = rep.stdout.splitlines()
        keep = [ln for ln in lines if ln.strip() and not ln.startswith("reading file")]
        for ln in keep[:160]:
            out("    " + ln)
        if args.keep:
            out(f"heaptrack data kept in {w.dir}")
    finally:
        w.destroy()


# ---- main ----------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("phases", nargs="*", default=[],
                    help="once, peer, http, memory, continuous, profile, instructions, "
                         "migrate (default: these eight), heap")
    ap.add_argument("--build-dir", default=os.environ.get("OAUTH_BUILD_DIR",
                                                          os.path.join(ROOT, "build-bench")))
    ap.add_argument("--accounts", type=int, default=100000, help="--once: accounts (default 100000)")
    ap.add_argument("--in-flight", type=int, default=1000)
    ap.add_argument("--skip-ceilings", action="store_true")
    ap.add_argument("--ceiling-seconds", dest="ceiling_s", type=int, default=5)
    ap.add_argument("--memory-sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[10000, 1000000])
    ap.add_argument("--rate", type=int, default=2800, help="continuous: accounts due per second")
    ap.add_argument("--duration", type=int, default=120, help="continuous: seconds")
    ap.add_argument("--table-accounts", type=int, default=3000000,
                    help="continuous: accounts in the table, the stream's and others not due "
                         "during the run (default 3000000)")
    ap.add_argument("--delay-ms", type=int, default=200, help="continuous: answer delay")
    ap.add_argument("--profile-accounts", type=int, default=30000)
    ap.add_argument("--instructions-accounts", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="once: runs of --once on freshly seeded databases; the targets take "
                         "the medians (default 3)")
    ap.add_argument("--migrate-accounts", type=int, default=1000000,
                    help="migrate: accounts in the version-1 database (default 1000000)")
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    phases = args.phases = args.phases or ["once", "peer", "http", "memory", "continuous",
                                           "profile", "instructions", "migrate"]
    for p in phases:
        if p not in ("once", "peer", "http", "memory", "continuous", "profile", "instructions",
                     "heap", "migrate"):
            ap.error(f"unknown phase {p}")
    if args.in_flight < 1 or args.accounts < 1 or args.repeat < 1:
        ap.error("--accounts, --in-flight and --repeat must be positive")
    daemon, _ = daemon_paths(args.build_dir)
    if not os.access(daemon, os.X_OK):
        ap.error(f"{daemon} is not built")

    out("oauth-refreshd benchmark")
    for line in machine_text():
        out("  " + line)
    out(f"  build: {args.build_dir}")
    out()
    summary = {}
    t = time.monotonic()
    if "once" in phases:
        summary["once"] = phase_once(args)
        out()
    if "peer" in phases and "once" not in phases:
        summary["peer"] = phase_peer(args)
        out()
    if "http" in phases:
        summary["http"] = phase_http(args)
        out()
    if "memory" in phases:
        summary["memory"] = phase_memory(args)
        out()
    if "continuous" in phases:
        summary["continuous"] = phase_continuous(args)
        out()
    if "profile" in phases:
        phase_profile(args)
        out()
    if "instructions" in phases:
        summary["instructions"] = phase_instructions(args)
        out()
    if "heap" in phases:
        phase_heap(args)
        out()
    if "migrate" in phases:  # bench/lib/migrate_phase.py
        summary["migrate"] = migrate_phase.phase_migrate(args, out, make_world, daemon_paths,
                                                         report_once, report_function_stats,
                                                         print_claim_plan)
        out()

    out("== targets ==")
    o = summary.get("once")
    if o:
        label = f"--once {o['n']:,}" + (f", median of {o['runs']} runs" if o.get("runs") else "")
        out(f"  {label}: >= {TARGET_RATE:,} refreshes/s (stretch {STRETCH_RATE:,}): "
            f"{o['rate']:,.0f} -> {verdict(o['rate'] >= TARGET_RATE)}"
            + (" (stretch met)" if o['rate'] >= STRETCH_RATE else ""))
        out(f"  {label}: daemon <= {TARGET_CPU_US} µs CPU per refresh: {o['us']:.1f} -> "
            f"{verdict(o['us'] <= TARGET_CPU_US)}")
        out(f"  {label}: PostgreSQL <= {TARGET_PG_US} µs CPU per refresh: {o['pg_us']:.1f} -> "
            f"{verdict(o['pg_us'] <= TARGET_PG_US)}")
        out(f"  {label}: peak RSS <= {TARGET_RSS_MB} MB: {o['rss_mb']:.1f} -> "
            f"{verdict(o['rss_mb'] <= TARGET_RSS_MB)}")
        out(f"  claim and due query use indexes: {verdict(o['indexes'])}")
    line = backlog_ratio_line(o)
    if line:
        out(line)
    pr = (o or {}).get("peer") or summary.get("peer")
    if pr:
        out(f"  python peer: {pr['rate']:,.0f} refreshes/s, {pr['us']:.0f} µs own CPU and "
            f"{pr['pg_us']:.0f} µs PostgreSQL CPU per refresh, peak RSS {pr['rss_mb']:.1f} MB"
            + (f"; daemon/peer throughput {o['rate'] / pr['rate']:.2f}x" if o and pr["rate"]
               else ""))
    m = summary.get("memory")
    if m:
        sizes = sorted(m)
        flat = max(m.values()) - min(m.values())
        out("  peak RSS by table size: " + ", ".join(f"{s:,}: {m[s]:.1f} MB" for s in sizes)
            + f" -> <= {TARGET_RSS_MB} MB {verdict(max(m.values()) <= TARGET_RSS_MB)}, "
              f"flat (spread {flat:.1f} MB <= {TARGET_RSS_SPREAD_MB} MB) "
              f"{verdict(flat <= TARGET_RSS_SPREAD_MB)}")
    c = summary.get("continuous")
    if c:
        ok = c["p99"] is not None and c["p99"] < TARGET_LATE_P99_S
        out(f"  continuous {args.rate:,}/s, {args.delay_ms} ms answers, table of "
            f"{c['table']:,}: p99 lateness < {TARGET_LATE_P99_S:.0f} s: "
            + (f"{c['p99'] * 1000:.0f} ms" if c['p99'] is not None and c['p99'] < 1e8 else "never")
            + f" -> {verdict(ok)}; every due account refreshed ({c['done']:,} of "
              f"{c['total']:,}) -> {verdict(c['done'] == c['total'])}")
    ir = summary.get("instructions")
    if ir:
        out(f"  daemon instructions per refresh (callgrind, {ir['done']:,} refreshes): "
            f"{ir['per']:,.0f}")
    out(f"(benchmark took {time.monotonic() - t:.0f}s)")
    failed = o and (o["rc"] != 0 or not o["complete"])
    failed = failed or (pr and (pr["rc"] != 0 or not pr["complete"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
