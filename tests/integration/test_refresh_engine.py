"""The refresh engine end to end: a real PostgreSQL, the real daemon, and a loopback HTTPS
token server speaking the Google, GitHub and Microsoft dialects (SPEC §1, §5, §6; issue 3)."""

import json
import os
import signal
import time

import pytest

from lib.daemon import wait_until


def state_of(db, account_id):
    rows = db.execute(
        "SELECT attempts, last_error, revoked, retry_at, lease_owner, due_at "
        "FROM oauth_refreshd.account_state WHERE account_id = %s", (account_id,))
    keys = ("attempts", "last_error", "revoked", "retry_at", "lease_owner", "due_at")
    return dict(zip(keys, rows[0])) if rows else None


def assert_refreshed_from_server(seeder, server, acct):
    """The row's tokens decrypt to exactly what the token server issued last."""
    row = seeder.read(acct.id)
    issued = server.issued_access_tokens(acct.account_key)
    assert issued, f"account {acct.id}: the token server issued nothing"
    assert row["access_token"] == issued[-1], (
        f"account {acct.id}: stored access token is not the last one issued")
    assert row["refresh_token"] == server.current_refresh_token(acct.account_key), (
        f"account {acct.id}: stored refresh token is not the one the provider considers valid")
    assert row["expires_at"] > acct.expires_at, f"account {acct.id}: expires_at did not move"
    return row


def test_due_accounts_of_every_provider_are_refreshed_exactly_once(
        migrated_env, seeder, token_server, events, db):
    due = {p: [seeder.add_account(p, expires_in=-60) for _ in range(4)]
           for p in ("google", "github", "microsoft")}
    later = [seeder.add_account(p, expires_in=7200) for p in ("google", "github", "microsoft")]
    not_refreshable = seeder.add_account("github", refresh_token=None, expires_in=None)
    untouched_before = {a.id: seeder.row(a.id) for a in later + [not_refreshable]}

    rc, log = migrated_env.run_once()
    assert rc == 0, f"expected exit 0 from --once, saw {rc}\n{log}"

    for provider, accts in due.items():
        for a in accts:
            assert token_server.refresh_count(a.account_key) == 1, (
                f"{provider} account {a.id}: expected exactly one refresh, saw "
                f"{token_server.refresh_count(a.account_key)}")
            row = assert_refreshed_from_server(seeder, token_server, a)
            if provider == "google":
                assert row["refresh_token"] == a.refresh_token, "google does not rotate"
            else:
                assert row["refresh_token"] != a.refresh_token, f"{provider} rotates"
    for a in later + [not_refreshable]:
        assert seeder.row(a.id) == untouched_before[a.id], f"account {a.id} must be byte-identical"
        assert token_server.requests_for(a.account_key) == [], f"account {a.id} was not due"

    all_due = [a for accts in due.values() for a in accts]
    events.wait_for(lambda e: e["event"] == "refreshed", count=len(all_due), timeout=10)
    refreshed = [e for e in events.events if e["event"] == "refreshed"]
    assert sorted(e["account_id"] for e in refreshed) == sorted(a.id for a in all_due)
    for e in refreshed:
        assert e["expires_at"].endswith("Z") and e["provider"] in due
    assert token_server.violations() == [], token_server.violations()


def test_microsoft_request_carries_stored_scope_with_offline_access(
        migrated_env, seeder, token_server):
    a = seeder.add_account("microsoft", scope="openid User.Read", expires_in=-60)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    sent = token_server.requests_for(a.account_key)[0].scope.split()
    assert "offline_access" in sent and "User.Read" in sent and "openid" in sent, sent


def test_github_request_asks_for_json(migrated_env, seeder, token_server):
    a = seeder.add_account("github", expires_in=-60)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert token_server.requests_for(a.account_key)[0].accept == "application/json"


def test_revoked_account_is_marked_emits_event_and_is_not_retried(
        migrated_env, seeder, token_server, events, db):
    a = seeder.add_account("google", expires_in=-60)
    g = seeder.add_account("github", expires_in=-60)
    token_server.revoke(a.account_key)
    token_server.revoke(g.account_key)
    before = {x.id: seeder.row(x.id) for x in (a, g)}

    rc, log = migrated_env.run_once()
    assert rc == 0, f"revocations are not failures of --once; saw {rc}\n{log}"
    for x, code in ((a, "invalid_grant"), (g, "bad_refresh_token")):
        st = state_of(db, x.id)
        assert st["revoked"] is True, f"account {x.id}: expected revoked, state {st}"
        assert st["last_error"] == code, st
        assert seeder.row(x.id) == before[x.id], "a revoked account's row is not touched"
    events.wait_for(lambda e: e["event"] == "revoked", count=2, timeout=10)

    token_server.clear_requests()
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert token_server.requests == [], "a revoked account must not be retried"


def test_new_refresh_token_from_application_clears_revocation(
        migrated_env, seeder, token_server, db, fernet_keys):
    a = seeder.add_account("github", expires_in=-60)
    token_server.revoke(a.account_key)
    rc, log = migrated_env.run_once()
    assert state_of(db, a.id)["revoked"] is True, log
    fresh = token_server.issue("github", a.account_key)
    db.execute("UPDATE oauth_accounts SET refresh_token = %s WHERE id = %s",
               (fernet_keys.encrypt(fresh), a.id))
    # The revocation is lifted by the daemon once it compared the tokens (a different
    # refresh token, not a re-save of the refused one), then the account is refreshed.
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert state_of(db, a.id)["revoked"] is False, log
    assert_refreshed_from_server(seeder, token_server, a)


@pytest.mark.parametrize("fault,code", [
    ("not_json", "bad_json"),
    ("json_array", "bad_shape"),
    ("missing_access_token", "missing_access_token"),
    ("huge_body", "oversized"),
])
def test_bad_answer_leaves_row_untouched_with_precise_error(
        migrated_env, seeder, token_server, db, fault, code):
    a = seeder.add_account("google", expires_in=-60)
    before = seeder.row(a.id)
    token_server.inject(fault, provider="google", count=1)
    rc, log = migrated_env.run_once()
    assert rc == 1, f"a bad answer is a failed attempt: expected exit 1, saw {rc}\n{log}"
    assert seeder.row(a.id) == before, "nothing may be overwritten by a bad answer"
    st = state_of(db, a.id)
    assert st["last_error"] == code, f"expected error {code!r}, state {st}"
    assert st["attempts"] == 1 and st["lease_owner"] is None, st


def test_undecryptable_refresh_token_is_reported_and_nothing_is_sent(
        migrated_env, seeder, token_server, db):
    from cryptography.fernet import Fernet
    foreign = Fernet(Fernet.generate_key()).encrypt(b"rt-foreign").decode()
    a = seeder.add_account("google", expires_in=-60, raw={"refresh_token": foreign})
    before = seeder.row(a.id)
    rc, log = migrated_env.run_once()
    assert rc == 1, log
    assert token_server.requests == [], "nothing must be sent for an undecryptable token"
    assert seeder.row(a.id) == before
    assert state_of(db, a.id)["last_error"] == "undecryptable_refresh_token"
    assert "rt-foreign" not in log and foreign not in log, "token material leaked into the log"


def test_provider_without_section_is_left_alone_and_reported(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("microsoft", expires_in=-60)
    before = seeder.row(a.id)
    migrated_env.write_config({"provider.microsoft": None})
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert seeder.row(a.id) == before
    assert state_of(db, a.id)["last_error"] is None, "unconfigured is not a failure"
    assert "microsoft" in log and "provider.microsoft" in log, log


def test_expires_in_missing_with_rotated_token_keeps_the_token(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("github", expires_in=-60)
    token_server.inject("missing_expires_in", provider="github", count=1)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    row = assert_refreshed_from_server(seeder, token_server, a)
    left = (row["expires_at"] - a.expires_at).total_seconds()
    assert 28000 < left < 29000, f"github's documented 8 h default expected, saw {left}s"
    assert "expires_in" in log, "a warning about the missing expires_in is logged"


def test_missing_schema_refuses_to_start_with_exit_69(daemon_env):
    rc, log = daemon_env.run_once()
    assert rc == 69, f"expected exit 69 without the schema, saw {rc}\n{log}"
    assert "oauth-refreshctl migrate" in log, log


def test_unreachable_database_exits_69_in_once_mode(daemon_env):
    daemon_env.write_config({"database": {"conninfo": "postgresql://127.0.0.1:1/none"}})
    rc, log = daemon_env.run_once(timeout=60)
    assert rc == 69, f"expected exit 69, saw {rc}\n{log}"


def continuous(env, overrides=None):
    if overrides:
        env.write_config(overrides)
    d = env.daemon("continuous")
    d.start()
    d.wait_for_log("ready", timeout=30)
    return d


def test_new_row_with_near_expiry_is_refreshed_through_the_trigger(
        migrated_env, seeder, token_server, events):
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"}})
    a = seeder.add_account("google", expires_in=120)  # inside the 5 min lead time
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=15)
    assert_refreshed_from_server(seeder, token_server, a)
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_refresh_request_notification_is_honoured_even_when_not_due(
        migrated_env, seeder, token_server, events):
    a = seeder.add_account("github", expires_in=7200)
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"}})
    p = migrated_env.ctl("refresh", str(a.id))
    assert p.returncode == 0, p.stderr
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=15)
    assert_refreshed_from_server(seeder, token_server, a)
    d.terminate()


def test_transient_errors_back_off_then_recover(
        migrated_env, seeder, token_server, events, db):
    a = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", provider="microsoft", count=2)
    d = continuous(migrated_env, {"refresh": {"retry_min": "1s", "retry_max": "4s"}})
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=30)
    failed = events.events_for(a.id, "failed")
    assert len(failed) == 2 and all(e["error"] == "http_503" for e in failed), failed
    reqs = token_server.requests_for(a.account_key)
    gaps = [reqs[i + 1].wall_start - reqs[i].wall_start for i in range(len(reqs) - 1)]
    assert all(g >= 0.45 for g in gaps), f"retries must back off, saw gaps {gaps}"
    assert_refreshed_from_server(seeder, token_server, a)
    assert state_of(db, a.id)["attempts"] == 0
    d.terminate()


def test_retry_after_is_honoured(migrated_env, seeder, token_server, events):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("429", provider="google", count=1, retry_after=3)
    d = continuous(migrated_env, {"refresh": {"retry_min": "1s", "retry_max": "1min"}})
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=30)
    reqs = token_server.requests_for(a.account_key)
    assert len(reqs) == 2, [r.outcome for r in reqs]
    assert reqs[1].wall_start - reqs[0].wall_start >= 2.9, "Retry-After: 3 must be honoured"
    d.terminate()


def test_row_changed_by_the_application_mid_flight_is_not_overwritten(
        migrated_env, seeder, token_server, db, fernet_keys):
    a = seeder.add_account("github", expires_in=-60)
    token_server.inject("delay", provider="github", count=1, ms=1500)
    d = continuous(migrated_env)
    wait_until(lambda: token_server.in_flight(), timeout=15, message="request in flight")
    app_token = fernet_keys.encrypt("rt-from-the-application")
    db.execute("UPDATE oauth_accounts SET refresh_token = %s, expires_at = now() + interval '1 day'"
               " WHERE id = %s", (app_token, a.id))
    after_app = seeder.row(a.id)
    d.wait_for_log("discarded", timeout=15)
    assert seeder.row(a.id) == after_app, "the application's newer row must win"
    d.terminate()


def test_connection_killed_mid_run_ends_with_everything_refreshed(
        migrated_env, seeder, token_server, pg_cluster, db, events):
    accts = []
    for p in ("google", "github", "microsoft"):
        accts += seeder.add_accounts(60, p, expires_in=-60)
    token_server.delay_ms = 30
    d = continuous(migrated_env, {"refresh": {"max_in_flight": 20, "scan_interval": "2s"}})
    wait_until(lambda: len(token_server.requests) >= 20, timeout=30, message="some requests")
    pg_cluster.terminate_backends(db.name)
    wait_until(lambda: len(events.events_for(event="refreshed")) >= len(accts), timeout=90,
               message="every account refreshed after the connection was killed")
    for a in accts:
        assert_refreshed_from_server(seeder, token_server, a)
    assert token_server.violations() == [], token_server.violations()
    assert "database connection lost" in d.log() or "connection" in d.log()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_once_refreshes_ten_thousand_due_accounts(migrated_env, seeder, token_server, db):
    n = 10000
    per = n // 3
    accts = []
    for p in ("google", "github", "microsoft"):
        accts += seeder.add_accounts(per + (n - 3 * per if p == "microsoft" else 0), p,
                                     expires_in=-60)
    # The default max_rate (50/s per provider) would make this a test of the rate limit.
    migrated_env.write_config({f"provider.{p}": {"max_rate": "0", "max_in_flight": 256}
                               for p in ("google", "github", "microsoft")})
    t0 = time.monotonic()
    rc, log = migrated_env.run_once(timeout=600)
    elapsed = time.monotonic() - t0
    assert rc == 0, log[-4000:]
    fresh = db.scalar("SELECT count(*) FROM oauth_accounts WHERE expires_at > now() + interval '30 min'")
    assert fresh == n, f"expected {n} refreshed rows, saw {fresh}"
    assert token_server.violations() == []
    print(f"--once refreshed {n} accounts in {elapsed:.1f}s ({n / elapsed:.0f}/s)")


def test_per_provider_rate_and_in_flight_caps_hold(migrated_env, seeder, token_server):
    slow = seeder.add_accounts(20, "google", expires_in=-60)
    fast = seeder.add_accounts(20, "github", expires_in=-60)
    token_server.delay_ms = 100
    migrated_env.write_config({"provider.google": {"max_rate": "5"},
                               "provider.github": {"max_rate": "0", "max_in_flight": 3}})
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    g = sorted(r.wall_start for r in token_server.requests if r.provider == "google")
    # 20 requests at 5/s (after the bucket's initial burst) take at least ~2.5 s.
    assert g[-1] - g[0] >= 2.0, f"google's max_rate 5/s not honoured: {g[-1] - g[0]:.2f}s"
    gh = [r for r in token_server.requests if r.provider == "github"]
    peak = max(sum(1 for o in gh if o.start <= r.start < o.end) for r in gh)
    assert peak <= 3, f"github's max_in_flight 3 exceeded: {peak} at once"


def test_a_provider_with_nothing_due_is_not_claimed_at_every_finished_request(
        migrated_env, seeder, token_server, events):
    """A claim for one provider walks the due accounts of all of them: claiming for a
    provider with nothing due each time another provider's request finishes cost 550 ms
    a claim at the end of a 1,000,000-account backlog. Such a provider waits for
    something that can give it work: here a new account (its notification) and an
    account whose due time comes (the due timer)."""
    backlog = seeder.add_accounts(120, "github", expires_in=-60)
    token_server.delay_ms = 40
    t0 = time.monotonic()
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"},
                                  "provider.github": {"max_in_flight": 4}})
    wait_until(lambda: all(token_server.refresh_count(a.account_key) == 1 for a in backlog),
               timeout=60, message="the github backlog refreshed")
    took = time.monotonic() - t0
    claims = [line for line in d.log().splitlines() if "claiming up to" in line]
    google = [line for line in claims if "google" in line]
    github = [line for line in claims if "github" in line]
    assert len(github) >= 20, f"the backlog took many claims: {len(github)}"
    # One claim at the start, then at most one recheck every 2 s (DRY_RECHECK_S).
    allowed = 2 + int(took / 2.0)
    assert len(google) <= allowed, (f"{len(google)} claims for google, which had nothing due, "
                                    f"during {len(github)} github claims in {took:.1f}s")

    token_server.delay_ms = 0
    fresh = seeder.add_account("google", expires_in=-60)          # notified: claimed at once
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == fresh.id,
                    timeout=10)
    lead = 300
    later = seeder.add_account("microsoft", expires_in=lead + 2)  # due in 2 s: the due timer
    t0 = time.monotonic()
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == later.id,
                    timeout=15)
    assert time.monotonic() - t0 <= 6, "the due timer wakes a provider that had nothing due"
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_an_account_coming_due_unannounced_is_claimed_while_others_keep_the_engine_busy(
        migrated_env, seeder, token_server, events):
    """Nothing announces an account simply coming due, and while another provider's claims
    come back full the next due time is not asked for: the provider that had nothing due
    must still be looked at again within seconds (found in review), not at scan_interval."""
    backlog = seeder.add_accounts(500, "github", expires_in=-60)   # about 7.5 s of work
    lead = 300
    quiet = seeder.add_account("google", expires_in=lead + 2)   # inserted before the start
    token_server.delay_ms = 60
    t0 = time.monotonic()
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h"},
                                  "provider.github": {"max_in_flight": 4}})
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == quiet.id,
                    timeout=30)
    took = time.monotonic() - t0
    left = sum(1 for a in backlog if token_server.refresh_count(a.account_key) == 0)
    assert took <= 2 + 2 + 2.5, f"refreshed {took:.1f}s after the start, due after 2s"
    assert left > 0, "the github backlog was still being worked through meanwhile"
    d.terminate()
    assert d.returncode == 0, d.log_tail()
