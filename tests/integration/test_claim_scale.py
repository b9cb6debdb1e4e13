"""A claim's cost must not grow with the backlog (issue 12 §2): what made it grow at 1M.

`bench/run migrate --accounts 1000000` measured claim_due at 46-72 ms per call over a 1M
backlog against 6.6 ms over 25k-100k. The claim's plan read ~2,400 buffers either way;
the difference was JIT compilation: the planner's total cost of the claim (its LATERAL
walk counted for ten providers, the default row estimate of unnest() of a parameter)
passes jit_above_cost (100,000) once account_state holds about a million rows, and every
call then compiled some 49 functions before running for a few ms (claim: ~65 ms with
JIT, ~11 ms without, on the same 1M table in the same minute). The daemon's statements
are short batches that run once per plan, so compiling them never pays: its functions
run with jit = off.

Here the large table is stood in for by jit_above_cost = 0 (every plan is over the
threshold), and auto_explain reports, for every statement inside the daemon's functions,
whether it was JIT-compiled.
"""

import datetime

import pytest

LEAD = datetime.timedelta(minutes=5)
# Marks the test's own statements, so that their plans (a Function Scan, planned in the
# test's session) are told from those of the functions' bodies.
TOP = "/* top */ "


def jit_plans(db, statements):
    """Runs statements (SQL, params) in one session in which every plan is over the JIT
    threshold; returns auto_explain's plans of them and of the statements in their
    functions' bodies."""
    conn = db.conn()
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    for setting in ("LOAD 'auto_explain'",
                    "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_nested_statements = on",
                    "SET jit = on",
                    "SET jit_above_cost = 0",
                    "SET jit_inline_above_cost = -1",
                    "SET jit_optimize_above_cost = -1",
                    "SET client_min_messages = log"):
        conn.execute(setting)
    try:
        for sql, params in statements:
            with conn.transaction():
                conn.execute(TOP + sql, params).fetchall()
    finally:
        conn.execute("SET client_min_messages = notice")
        conn.close()
    return [n for n in notices if "Query Text" in n]


def lease(db, ids, owner):
    db.execute("UPDATE oauth_refreshd.account_state SET lease_owner = %s, "
               "lease_until = now() + interval '60 s' WHERE account_id = ANY (%s)",
               (owner, list(ids)))


def test_the_daemons_batches_are_never_jit_compiled_however_large_the_table(
        migrated_env, seeder, db):
    probe = jit_plans(db, [("SELECT count(*) FROM oauth_refreshd.account_state", None)])
    if not any("JIT:" in p for p in probe):
        pytest.skip("this PostgreSQL has no JIT (postgresql-15's llvmjit): nothing to prove")
    accts = seeder.add_accounts(40, "google", expires_in=-600)
    ids = [a.id for a in accts]
    mine, failed, revoked, released = ids[:10], ids[10:15], ids[15:20], ids[20:25]
    lease(db, mine + failed + revoked + released, "me")
    old = dict(db.execute("SELECT id, refresh_token FROM oauth_accounts WHERE id = ANY (%s)",
                          (ids,)))
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    n = len(mine)
    statements = [
        ("SELECT * FROM oauth_refreshd.claim_due('claimer', '{google,github}', %s, '0', "
         "'60 s', 5)", (LEAD,)),
        ("SELECT * FROM oauth_refreshd.claim_due('claimer', '{google}', %s, '0', '60 s', 5, "
         "now() - interval '1 min')", (LEAD,)),
        ("SELECT oauth_refreshd.next_wakeup('{google,github}', %s, '0')", (LEAD,)),
        ("SELECT * FROM oauth_refreshd.claim_ids('claimer', '{google}', %s, '60 s')",
         (ids[25:30],)),
        ("SELECT * FROM oauth_refreshd.store_refreshed('me', %s::bigint[], %s::text[], "
         "%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s)",
         (mine, [old[i] for i in mine], ["at"] * n, [None] * n, [None] * n, [exp] * n,
          [None] * n, [None] * n, LEAD)),
        ("SELECT oauth_refreshd.store_failed('me', %s::bigint[], %s::text[], "
         "%s::timestamptz[], %s)", (failed, ["http_503"] * 5, [exp] * 5, LEAD)),
        ("SELECT * FROM oauth_refreshd.store_revoked('me', %s::bigint[], %s::text[], "
         "%s::text[])", (revoked, [old[i] for i in revoked], ["invalid_grant"] * 5)),
        ("SELECT oauth_refreshd.release('me', %s::bigint[])", (released,)),
    ]
    plans = jit_plans(db, statements)
    top = [p for p in plans if TOP in p]
    body = [p for p in plans if TOP not in p]
    assert len(top) == len(statements), f"expected a plan per statement, saw {len(top)}"
    assert len(body) >= len(statements), f"expected the functions' bodies' plans, saw {body}"
    compiled = [p for p in body if "JIT:" in p]
    assert not compiled, (
        f"{len(compiled)} of {len(body)} statements of the daemon's functions were "
        f"JIT-compiled (tens of ms per call on a large table); the first:\n{compiled[0]}")
    # The calls did their work (the probe is the daemon's real path, not a no-op).
    assert db.scalar("SELECT count(*) FROM oauth_refreshd.account_state WHERE account_id = "
                     "ANY (%s) AND refresh_count = 1", (mine,)) == n
    assert db.scalar("SELECT count(*) FROM oauth_refreshd.account_state WHERE account_id = "
                     "ANY (%s) AND revoked", (revoked,)) == 5
