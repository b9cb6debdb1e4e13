"""The benchmark's `migrate` phase (bench/run migrate --migrate-accounts N; issue 12 §2).

Owns: a database of N accounts at schema version 1 (tests/fixtures/schema-v1.sql, what
0.1.0 installs), the version-1 daemon (built from git history, cached under the build
directory, as test_migrate.py builds it) refreshing it, `oauth-refreshctl migrate` of
this build run while that daemon works and while an application writer times its
writes; then the report: migrate time, backfill rate, the writer's longest wait, the
EXPLAIN of a claim on the migrated table, and `oauth-refreshd --once` (this build) over
what is left of the backlog.
Must never: touch anything outside the world's temporary directory, or print a token.
"""

import os
import re
import subprocess
import threading
import time

import psycopg

import runner
import procstat
from world import ROOT

V1_SQL = os.path.join(ROOT, "tests", "fixtures", "schema-v1.sql")


class AppWriter(threading.Thread):
    """The application: rewrites expires_at (unchanged) of accounts across the table, as a
    save() does, so that its trigger writes account_state rows the backfill is locking."""

    def __init__(self, dsn, n):
        super().__init__(daemon=True)
        self.dsn, self.n = dsn, n
        self.stop = threading.Event()
        self.max_wait = 0.0
        self.max_at = None  # time.monotonic() when the longest wait began
        self.writes = 0

    def run(self):
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set():
                aid = 1 + (i * 7919) % self.n
                t0 = time.monotonic()
                conn.execute("UPDATE oauth_accounts SET expires_at = expires_at, "
                             "updated_at = now() WHERE id = %s", (aid,))
                wait = time.monotonic() - t0
                if wait > self.max_wait:
                    self.max_wait, self.max_at = wait, t0
                self.writes += 1
                i += 1
                time.sleep(0.01)


def load_v1(db):
    with open(V1_SQL) as f:
        v1 = f.read()
    conn = db.conn(autocommit=False)
    try:
        conn.execute("SET LOCAL client_min_messages = warning")
        conn.execute(v1)
        conn.commit()
    finally:
        conn.close()


def phase_migrate(args, out, make_world, daemon_paths, report_once, report_function_stats,
                  print_claim_plan):
    import test_migrate  # tests/integration: the version-1 daemon's build

    n = args.migrate_accounts
    out(f"== migrate: version 1 -> 3 of {n:,} accounts under a running version-1 daemon ==")
    old_daemon = test_migrate.build_old_daemon(test_migrate.V1_COMMIT)
    w = make_world(args)
    try:
        w.new_database("bench_migrate")
        env = w.make_env(kind="h2", max_in_flight=args.in_flight)
        secs = w.seed(n, "now() - ((g % 900) - 240) * interval '1 second'")
        t = time.monotonic()
        load_v1(w.db)
        w.db.execute("VACUUM ANALYZE")
        out(f"seeded {n:,} accounts (all due) in {secs:.1f}s; version-1 schema + VACUUM "
            f"ANALYZE {time.monotonic() - t:.1f}s")
        log = open(os.path.join(w.dir, "v1-daemon.log"), "ab")
        old = subprocess.Popen([old_daemon, "-c", env.config_path], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        writer = AppWriter(w.db.dsn, n)
        try:
            time.sleep(5)  # the old daemon at work
            writer.start()
            _, ctl = daemon_paths(args.build_dir)
            t = time.monotonic()
            p = subprocess.Popen([ctl, "migrate", "--conninfo", w.db.dsn], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            lines = []  # (seconds since the start, line): which step a long wait fell in
            for raw in p.stdout:
                lines.append((time.monotonic() - t, raw.decode(errors="replace").rstrip("\n")))
            stderr = p.stderr.read()
            p.wait(args.timeout)
            took = time.monotonic() - t
            time.sleep(2)
        finally:
            writer.stop.set()
            writer.join(30)
            old.terminate()
            old.wait(60)
            log.close()
        text = "\n".join(line for _, line in lines)
        for at, line in lines:
            out(f"  | {at:6.1f}s {line}")
        for line in stderr.decode(errors="replace").splitlines():
            out("  ! " + line)
        if p.returncode != 0:
            out(f"  migrate FAILED (exit {p.returncode})")
            return None
        m = re.findall(r"backfill: (\d+) / (\d+) rows \(\d+ %\), (\d+) rows/s", text)
        rate = int(m[-1][2]) if m else None
        refreshed_by_v1 = w.db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                                      "WHERE last_refreshed_at IS NOT NULL")
        doubled = w.db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                              "WHERE refresh_count > 1")
        out(f"  migrate took          {took:.1f} s (backfill {rate or 0:,} rows/s)")
        when = (f" at {writer.max_at - t:.1f}s of the migration"
                if writer.max_at is not None else "")
        out(f"  application writes    {writer.writes:,} during the migration, longest wait "
            f"{writer.max_wait * 1000:.0f} ms{when}")
        out(f"  version-1 daemon      exit {old.returncode}; {refreshed_by_v1:,} accounts "
            f"refreshed, {doubled} refreshed twice")
        w.db.execute("ANALYZE")
        print_claim_plan(w.db)
        left = w.db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                           "WHERE last_refreshed_at IS NULL AND due_at IS NOT NULL")
        w.db.execute("SELECT pg_stat_reset()")  # the function stats of the --once run alone
        postmaster = w.postmaster_pid()
        daemon, _ = daemon_paths(args.build_dir)
        r = runner.run_daemon(daemon, env.config_path, os.path.join(w.dir, "once-after.log"),
                              args=["--once"], watch_pids=lambda: procstat.children(postmaster),
                              nginx=w.nginx, timeout=args.timeout)
        once_rate, us = report_once(r, left, f"oauth-refreshd --once after the migration "
                                              f"({left:,} of the {n:,} still due)")
        report_function_stats(w.db, left)
        vac = w.db.execute("SELECT relname, autovacuum_count, autoanalyze_count "
                           "FROM pg_stat_user_tables WHERE relname IN ('account_state', "
                           "'oauth_accounts') ORDER BY relname")
        out("  autovacuum during it  " + ", ".join(f"{r}: {v} vacuums, {a} analyzes"
                                                  for r, v, a in vac))
        return {"took": took, "backfill_rate": rate, "max_wait": writer.max_wait,
                "once_rate": once_rate, "doubled": doubled}
    finally:
        w.destroy()
