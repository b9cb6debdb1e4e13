"""The machine's limits, measured in the same run as the daemon.

Owns: the token endpoint alone (h2load over HTTP/2 and wrk over HTTP/1.1,
sending the same POST the daemon sends: a form body with a refresh token of the
real size, Accept: application/json), and PostgreSQL alone doing the daemon's
own SQL (oauth_refreshd.claim_due + oauth_refreshd.store_refreshed, 500 rows
per statement, on one connection like the daemon's, and with two), run with
pgbench on a throwaway clone of the benchmark database so that the daemon
still finds every account due.
Must never: run against anything but the benchmark's own nginx and cluster.
"""

import os
import re
import shutil
import subprocess

FORM_BODY = ("grant_type=refresh_token&refresh_token=1%2F%2F0g" + "x" * 100 +
             "&client_id=bench-google-client&client_secret=bench-google-secret")

# Helpers created in the clone only. bench_cycle does what the daemon's database
# work for n accounts is: one claim (the daemon's claim_due) and one write-back of
# the results (store_refreshed with new ciphertexts of the real sizes: the stored
# ones are reused, rotated providers get a new refresh token, Microsoft an id_token).
# bench_store is the write pattern alone, on n consecutive accounts.
HELPERS = r"""
CREATE OR REPLACE FUNCTION bench_write(p_owner text, p_ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[]; v_old text[]; v_at text[]; v_rt text[]; v_idt text[];
    v_exp timestamptz[]; v_scope text[]; v_tt text[]; n integer;
BEGIN
    SELECT array_agg(a.id ORDER BY a.id), array_agg(a.refresh_token ORDER BY a.id),
           array_agg(a.access_token ORDER BY a.id),
           array_agg(CASE WHEN a.provider = 'google' THEN NULL ELSE a.refresh_token END ORDER BY a.id),
           array_agg(CASE WHEN a.provider = 'microsoft' THEN a.access_token END ORDER BY a.id),
           array_agg(now() + interval '1 hour' ORDER BY a.id),
           array_agg(a.scope ORDER BY a.id), array_agg('Bearer'::text ORDER BY a.id)
      INTO v_ids, v_old, v_at, v_rt, v_idt, v_exp, v_scope, v_tt
      FROM public.oauth_accounts a WHERE a.id = ANY (p_ids);
    SELECT count(*) INTO n FROM oauth_refreshd.store_refreshed(
        p_owner, v_ids, v_old, v_at, v_rt, v_idt, v_exp, v_scope, v_tt, interval '5 min') s
     WHERE s.stored;
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION bench_cycle(p_owner text, p_n integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE v_ids bigint[];
BEGIN
    SELECT array_agg(c.account_id) INTO v_ids
      FROM oauth_refreshd.claim_due(p_owner, '{google,github,microsoft}', interval '5 min',
                                    interval '0', interval '70 s', p_n) c;
    IF v_ids IS NULL THEN RETURN 0; END IF;
    RETURN bench_write(p_owner, v_ids);
END $$;

CREATE OR REPLACE FUNCTION bench_store(p_start bigint, p_n integer) RETURNS integer
LANGUAGE sql AS $$
    SELECT bench_write('bench-store', ARRAY(SELECT generate_series(p_start, p_start + p_n - 1)))
$$;
"""


def _num(rx, text):
    m = re.search(rx, text)
    return float(m.group(1)) if m else None


def h2load(url, seconds=5, connections=64, streams=16, threads=2, workdir="/tmp"):
    """Requests per second over HTTP/2 (None when h2load is missing or failed)."""
    exe = shutil.which("h2load")
    if not exe:
        return None, "h2load not installed (Debian: nghttp2-client)"
    body = os.path.join(workdir, "h2load-body.txt")
    with open(body, "w") as f:
        f.write(FORM_BODY)
    argv = [exe, "-D", str(seconds), "--warm-up-time", "1", "-c", str(connections),
            "-m", str(streams), "-t", str(threads), "-d", body,
            "-H", "content-type: application/x-www-form-urlencoded",
            "-H", "accept: application/json", url]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=seconds + 60)
    rps = _num(r"finished in [\d.]+\w+, ([\d.]+) req/s", p.stdout)
    ok = _num(r"(\d+) succeeded", p.stdout)
    failed = _num(r"(\d+) failed", p.stdout)
    note = f"{connections} connections x {streams} streams, {threads} threads"
    if rps is None or not ok or failed:
        return None, f"h2load failed: {p.stdout[-800:]}"
    return rps, note


def wrk(url, seconds=5, connections=64, threads=2, workdir="/tmp"):
    """Requests per second over HTTP/1.1 keep-alive with wrk."""
    exe = shutil.which("wrk")
    if not exe:
        return None, "wrk not installed (Debian: wrk)"
    script = os.path.join(workdir, "wrk-post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n'
                f'wrk.body = "{FORM_BODY}"\n'
                'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
                'wrk.headers["Accept"] = "application/json"\n')
    argv = [exe, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", script, url]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=seconds + 60)
    rps = _num(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if rps is None or "Non-2xx" in p.stdout:
        return None, f"wrk failed: {p.stdout[-800:]}"
    return rps, f"{connections} connections, {threads} threads"


def pg_prepare_clone(cluster, source_db, clone_name):
    """A clone of the benchmark database with the helpers, for pgbench."""
    cluster.admin(f'DROP DATABASE IF EXISTS "{clone_name}" WITH (FORCE)')
    cluster.admin(f'CREATE DATABASE "{clone_name}" TEMPLATE "{source_db}"')
    with cluster.connect(clone_name) as c:
        c.execute(HELPERS)
        c.execute("VACUUM ANALYZE")


def pgbench(cluster, dbname, script_text, clients, transactions, workdir, tag):
    exe = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    script = os.path.join(workdir, f"pgbench-{tag}.sql")
    with open(script, "w") as f:
        f.write(script_text)
    os.chmod(script, 0o644)
    argv = [exe, "-n", "-h", cluster.host, "-p", str(cluster.port), "-U", cluster.superuser,
            "-c", str(clients), "-j", str(clients), "-t", str(transactions), "-f", script,
            "-M", "prepared", dbname]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=900)
    tps = _num(r"tps = ([\d.]+) \(without initial connection time\)", p.stdout)
    if tps is None or p.returncode != 0:
        return None, f"pgbench failed: {p.stdout[-800:]}"
    return tps, p.stdout


def pg_ceilings(cluster, source_db, n_accounts, workdir, batch=500):
    """{name: (rows per second or None, note)} for PostgreSQL alone."""
    out = {}
    clone = source_db + "_ceiling"
    pg_prepare_clone(cluster, source_db, clone)
    try:
        b = min(batch, max(1, n_accounts // 4))
        # Claim + write, the daemon's whole database work. Every cycle consumes b due
        # accounts; keep a quarter of them unclaimed so no cycle comes back short.
        cycles = max(2, (n_accounts * 3 // 4) // b)
        per_client = max(1, cycles // 2)
        for clients in (1, 2):
            cluster.admin(f'DROP DATABASE IF EXISTS "{clone}_run" WITH (FORCE)')
            cluster.admin(f'CREATE DATABASE "{clone}_run" TEMPLATE "{clone}"')
            tps, txt = pgbench(cluster, f"{clone}_run",
                               f"SELECT bench_cycle('ceiling-' || :client_id, {b});\n",
                               clients, per_client if clients == 2 else per_client * 2,
                               workdir, f"cycle{clients}")
            out[f"claim_due + store_refreshed, {b} rows/statement, {clients} connection(s)"] = (
                tps * b if tps else None, "" if tps else txt)
        cluster.admin(f'DROP DATABASE IF EXISTS "{clone}_run" WITH (FORCE)')
        # The write pattern alone, on random blocks of b consecutive accounts.
        top = max(1, n_accounts - b + 1)
        tps, txt = pgbench(cluster, clone,
                           f"\\set start random(1, {top})\nSELECT bench_store(:start, {b});\n",
                           1, max(2, min(400, n_accounts // b)), workdir, "store1")
        out[f"store_refreshed alone, {b} rows/statement, 1 connection"] = (
            tps * b if tps else None, "" if tps else txt)
    finally:
        cluster.admin(f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')
    return out
