"""The oauth_refresh_event payloads on the wire, byte for byte as SPEC §5 shows them.

The real daemon runs `--once` against the test PostgreSQL and the loopback token server;
a listener keeps each NOTIFY payload as the raw text the server sent. Each payload must be
the compact JSON of the SPEC, members in the SPEC's order:

    {"event":"refreshed","account_id":42,"provider":"google","expires_at":"2026-11-27T17:42:10Z"}
    {"event":"revoked","account_id":42,"provider":"github","error":"bad_refresh_token"}
    {"event":"failed","account_id":42,"provider":"microsoft","error":"...","retry_at":"..."}

(The daemon only ever passes sanitised error codes, [A-Za-z0-9_.-]; the escaping of hostile
error text is proven against the SQL functions directly in test_db.py.)
"""

import datetime
import json


def utc_text(ts):
    """SPEC §5 time format: UTC, whole seconds (PostgreSQL's to_char truncates)."""
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def raw_payloads_for(events, account_id):
    """The raw payload texts whose account_id is this account (parsed only to select)."""
    out = []
    for p in events.payloads:
        try:
            if json.loads(p).get("account_id") == account_id:
                out.append(p)
        except ValueError:
            pass
    return out


def test_refreshed_revoked_and_failed_payloads_are_the_specs_compact_json_byte_for_byte(
        migrated_env, seeder, token_server, events, db):
    ok = seeder.add_account("google", expires_in=-60)
    gone = seeder.add_account("github", expires_in=-60)
    token_server.revoke(gone.account_key)
    flaky = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", provider="microsoft", count=1)

    rc, log = migrated_env.run_once()
    assert rc == 1, f"a transient failure makes --once exit 1; saw {rc}\n{log}"
    events.wait_for(count=3, timeout=15)

    expires_at = db.scalar("SELECT expires_at FROM oauth_accounts WHERE id = %s", (ok.id,))
    retry_at = db.scalar("SELECT retry_at FROM oauth_refreshd.account_state WHERE account_id = %s",
                         (flaky.id,))
    assert retry_at is not None, "the failed attempt must have stored its retry time"
    expected = {
        ok.id: '{"event":"refreshed","account_id":%d,"provider":"google","expires_at":"%s"}'
               % (ok.id, utc_text(expires_at)),
        gone.id: '{"event":"revoked","account_id":%d,"provider":"github",'
                 '"error":"bad_refresh_token"}' % gone.id,
        flaky.id: '{"event":"failed","account_id":%d,"provider":"microsoft","error":"http_503",'
                  '"retry_at":"%s"}' % (flaky.id, utc_text(retry_at)),
    }
    for account_id, want in expected.items():
        seen = raw_payloads_for(events, account_id)
        assert seen == [want], (f"account {account_id}: expected exactly one payload\n  {want}\n"
                                f"saw\n  {seen}")
    assert len(events.payloads) == 3, f"expected 3 events in all, saw {events.payloads}"


def test_refreshed_payloads_of_a_whole_batch_match_the_rows_written(
        migrated_env, seeder, token_server, events, db):
    accts = seeder.add_accounts(40, "github", expires_in=-60)
    rc, log = migrated_env.run_once()
    assert rc == 0, f"expected exit 0, saw {rc}\n{log}"
    events.wait_for(count=40, timeout=15)
    rows = dict(db.execute("SELECT id, expires_at FROM oauth_accounts WHERE id = ANY (%s)",
                           ([a.id for a in accts],)))
    for a in accts:
        want = compact({"event": "refreshed", "account_id": a.id, "provider": "github",
                        "expires_at": utc_text(rows[a.id])})
        seen = raw_payloads_for(events, a.id)
        assert seen == [want], f"account {a.id}: expected [{want}], saw {seen}"
