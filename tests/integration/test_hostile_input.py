"""Hostile and broken input (SPEC §6 "Bad input gets a clear error and loses nothing"; issue 5).

One test per kind of bad input. Each proves three things: the account records a precise
error in oauth_refreshd.account_state.last_error (and the log names it), its row in
oauth_accounts is byte-identical afterwards (nothing overwritten), and the daemon is still
running: --once finishes the run and exits 1 (a failed attempt), and a continuous daemon
goes on to refresh a healthy account after the bad one.
"""

import base64

import pytest
from cryptography.fernet import Fernet

from lib.daemon import wait_until


def state_of(db, account_id):
    rows = db.execute(
        "SELECT attempts, last_error, revoked, retry_at, lease_owner "
        "FROM oauth_refreshd.account_state WHERE account_id = %s", (account_id,))
    keys = ("attempts", "last_error", "revoked", "retry_at", "lease_owner")
    return dict(zip(keys, rows[0])) if rows else None


def assert_failed_untouched(seeder, db, acct, before, code, log):
    assert seeder.row(acct.id) == before, (
        f"account {acct.id}: expected the row byte-identical after {code!r}, it changed")
    st = state_of(db, acct.id)
    assert st is not None and st["last_error"] == code, (
        f"account {acct.id}: expected last_error {code!r}, saw state {st}")
    assert st["revoked"] is False, f"account {acct.id}: bad input is not a revocation: {st}"
    assert st["lease_owner"] is None, f"account {acct.id}: the claim must be released: {st}"
    assert f"({code})" in log and f"account {acct.id}" in log, (
        f"expected a log line naming account {acct.id} and ({code}); log tail:\n{log[-3000:]}")
    if acct.refresh_token:
        assert acct.refresh_token not in log, "the refresh token leaked into the log"


def once_fails_cleanly(env, seeder, db, acct, code, before=None, timeout=120):
    """--once over a seeded bad account: exit 1, precise error, row untouched."""
    before = before if before is not None else seeder.row(acct.id)
    rc, log = env.run_once(timeout=timeout)
    assert rc == 1, f"a failed attempt makes --once exit 1; saw {rc}\n{log[-3000:]}"
    assert "AddressSanitizer" not in log and "runtime error" not in log, log[-6000:]
    assert_failed_untouched(seeder, db, acct, before, code, log)
    return log


# The continuous runs must not retry within the test: the failure is the last word.
NO_RETRY = {"refresh": {"retry_min": "1h", "retry_max": "2h", "scan_interval": "1h"}}


def continuous_fails_cleanly(env, seeder, db, events, token_server, acct, code, overrides=None):
    """A continuous daemon meets the bad account, records it, and keeps working."""
    before = seeder.row(acct.id)
    cfg = {k: dict(v) for k, v in NO_RETRY.items()}
    for k, v in (overrides or {}).items():
        cfg.setdefault(k, {}).update(v)
    env.write_config(cfg)
    d = env.daemon("continuous")
    d.start()
    d.wait_for_log("ready", timeout=30)
    events.wait_for(lambda e: e["event"] == "failed" and e["account_id"] == acct.id, timeout=60)
    wait_until(lambda: (state_of(db, acct.id) or {}).get("lease_owner") is None, timeout=10,
               message=f"account {acct.id} released after its failure")
    assert d.running(), f"the daemon died on {code!r}:\n{d.log_tail(80)}"
    assert_failed_untouched(seeder, db, acct, before, code, d.log())
    failed = events.events_for(acct.id, "failed")
    assert failed and failed[0]["error"] == code, f"expected a failed event with {code!r}: {failed}"

    # Still running and still useful: a healthy account added now is refreshed.
    token_server.clear_faults()
    good = seeder.add_account("github", expires_in=-60)
    env.ctl("refresh", str(good.id))
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == good.id, timeout=30)
    assert seeder.row(acct.id) == before, "the bad account's row changed later on"
    rc = d.terminate()
    assert rc == 0, f"expected a clean exit 0 on SIGTERM, saw {rc}\n{d.log_tail(80)}"
    log = d.log()
    assert "AddressSanitizer" not in log and "runtime error" not in log, log[-6000:]


# ---- provider answers -------------------------------------------------------------------------

def test_answer_that_is_not_json_records_bad_json(migrated_env, seeder, token_server, db):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("not_json", provider="google", count=1)
    once_fails_cleanly(migrated_env, seeder, db, a, "bad_json")


def test_json_array_instead_of_object_records_bad_shape(migrated_env, seeder, token_server, db):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("json_array", provider="google", count=1)
    once_fails_cleanly(migrated_env, seeder, db, a, "bad_shape")


@pytest.mark.parametrize("body,code", [
    ('{"access_token": 42, "expires_in": 3600, "token_type": "Bearer"}', "missing_access_token"),
    ('{"error": {"code": 400, "message": "nested"}}', "bad_error_field"),
    ('{"access_token": "ya29.x", "expires_in": 3600, "refresh_token": 7}', "bad_shape"),
    ('"just a string"', "bad_json"),  # jansson reads only objects/arrays at the top
    ('{"access_token": "ya29.x", "expires_in": 3600', "bad_json"),
], ids=["access_token-number", "error-object", "refresh_token-number", "json-string", "truncated"])
def test_json_of_the_wrong_shape_records_precise_error(
        migrated_env, seeder, token_server, db, body, code):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("status", provider="google", count=1, status=200, body=body)
    once_fails_cleanly(migrated_env, seeder, db, a, code)


def test_answer_without_access_token_records_missing_access_token(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("missing_access_token", provider="google", count=1)
    once_fails_cleanly(migrated_env, seeder, db, a, "missing_access_token")


def assert_refreshed_with_default_lifetime(seeder, token_server, db, acct, log, default_s):
    """SPEC §6 (issue 10): a missing or absurd expires_in is the documented default + a warning."""
    row = seeder.read(acct.id)
    assert row["access_token"] == token_server.issued_access_tokens(acct.account_key)[-1], (
        "the answer's access token is stored")
    lifetime = (row["expires_at"] - row["updated_at"]).total_seconds()
    assert default_s - 10 <= lifetime <= default_s + 10, (
        f"expected the documented default of {default_s} s, saw {lifetime:.0f} s")
    st = state_of(db, acct.id)
    assert st["last_error"] is None and st["attempts"] == 0, st
    assert "no usable expires_in" in log and f"account {acct.id}" in log, (
        "the defaulted lifetime is logged as a warning")


def test_answer_without_expires_in_and_no_rotated_token_uses_default_lifetime(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("google", expires_in=-60)  # Google does not rotate
    token_server.inject("missing_expires_in", provider="google", count=1)
    rc, log = migrated_env.run_once()
    assert rc == 0, f"a usable answer is a success; saw {rc}\n{log[-3000:]}"
    assert_refreshed_with_default_lifetime(seeder, token_server, db, a, log, 3600)


def test_answer_without_expires_in_but_rotated_token_keeps_it_with_default_lifetime(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("missing_expires_in", provider="microsoft", count=1)
    rc, log = migrated_env.run_once()
    assert rc == 0, f"a usable answer with a rotated token is a success; saw {rc}\n{log[-3000:]}"
    row = seeder.read(a.id)
    assert row["refresh_token"] == token_server.current_refresh_token(a.account_key), (
        "the rotated refresh token must be stored, never thrown away")
    assert row["refresh_token"] != a.refresh_token
    assert row["access_token"] == token_server.issued_access_tokens(a.account_key)[-1]
    lifetime = (row["expires_at"] - row["updated_at"]).total_seconds()
    assert 3590 <= lifetime <= 3610, (
        f"expected Microsoft's documented default of 3600 s, saw {lifetime:.0f} s")
    st = state_of(db, a.id)
    assert st["last_error"] is None and st["attempts"] == 0, st
    assert "expires_in" in log and f"account {a.id}" in log, "the defaulted lifetime is logged"


@pytest.mark.parametrize("value", [0, -3600, 10 ** 12, "soon", "3600s", 1.5e300, None, True],
                         ids=["zero", "negative", "absurd", "string", "digits-with-unit",
                              "huge-real", "null", "boolean"])
def test_unusable_expires_in_without_rotated_token_uses_default_lifetime(
        migrated_env, seeder, token_server, db, value):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("expires_in", provider="google", count=1, value=value)
    rc, log = migrated_env.run_once()
    assert rc == 0, f"a usable answer is a success; saw {rc}\n{log[-3000:]}"
    assert_refreshed_with_default_lifetime(seeder, token_server, db, a, log, 3600)


@pytest.mark.parametrize("value", [0, -1, 10 ** 12, "never"],
                         ids=["zero", "negative", "absurd", "string"])
def test_unusable_expires_in_with_rotated_token_keeps_the_token(
        migrated_env, seeder, token_server, db, value):
    a = seeder.add_account("github", expires_in=-60)
    token_server.inject("expires_in", provider="github", count=1, value=value)
    rc, log = migrated_env.run_once()
    assert rc == 0, log[-3000:]
    row = seeder.read(a.id)
    assert row["refresh_token"] == token_server.current_refresh_token(a.account_key)
    lifetime = (row["expires_at"] - row["updated_at"]).total_seconds()
    assert 28790 <= lifetime <= 28810, f"expected GitHub's 8 h default, saw {lifetime:.0f} s"


def test_ten_megabyte_body_records_oversized_and_daemon_keeps_running(
        migrated_env, seeder, token_server, db, events):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("huge_body", provider="google", count=1)
    continuous_fails_cleanly(migrated_env, seeder, db, events, token_server, a, "oversized")


def test_connection_reset_mid_body_records_network_error_and_daemon_keeps_running(
        migrated_env, seeder, token_server, db, events):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("reset", provider="google", count=1)
    continuous_fails_cleanly(migrated_env, seeder, db, events, token_server, a, "network")


def test_stalled_provider_records_timeout_and_daemon_keeps_running(
        migrated_env, seeder, token_server, db, events):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("stall", provider="google", count=1)
    continuous_fails_cleanly(migrated_env, seeder, db, events, token_server, a, "timeout",
                             overrides={"refresh": {"request_timeout": "2s"}})
    reqs = token_server.requests_for(a.account_key)
    assert len(reqs) == 1 and (reqs[0].outcome or "").startswith("fault:stall"), (
        f"expected one stalled request, saw {[r.outcome for r in reqs]}")


def test_stalled_provider_in_once_mode_times_out_and_exits_1(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("stall", provider="microsoft", count=1)
    migrated_env.write_config({"refresh": {"request_timeout": "2s"}})
    once_fails_cleanly(migrated_env, seeder, db, a, "timeout", timeout=60)


def test_certificate_from_unknown_ca_records_tls_and_daemon_keeps_running(
        migrated_env, seeder, token_server, token_server_factory, pki, db, events):
    impostor = token_server_factory(cert=pki.other_cert_file, key=pki.other_key_file)
    a = seeder.add_account("google", expires_in=-60)
    continuous_fails_cleanly(migrated_env, seeder, db, events, token_server, a, "tls",
                             overrides={"provider.google": {"token_url": impostor.token_url("google")}})
    assert impostor.requests == [], "no request may reach a server whose certificate failed"
    assert token_server.requests_for(a.account_key) == []


# ---- stored rows ------------------------------------------------------------------------------

def _foreign_key_token(plain):
    return Fernet(Fernet.generate_key()).encrypt(plain.encode()).decode()


def _corrupt_base64(fernet_keys, plain):
    tok = fernet_keys.encrypt(plain)
    return tok[:20] + "*!" + tok[22:]


def _truncated(fernet_keys, plain):
    tok = fernet_keys.encrypt(plain)
    return tok[: len(tok) // 2]


def _bitflip(fernet_keys, plain):
    raw = bytearray(base64.urlsafe_b64decode(fernet_keys.encrypt(plain)))
    raw[30] ^= 0x01  # inside the ciphertext: the MAC must catch it
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("make", [
    lambda k, p: _foreign_key_token(p),
    _corrupt_base64,
    _truncated,
    _bitflip,
    lambda k, p: p,  # plaintext where ciphertext belongs (a package that "fell back")
], ids=["foreign-key", "corrupt-base64", "truncated", "tampered", "plaintext"])
def test_refresh_token_that_does_not_decrypt_records_undecryptable_and_sends_nothing(
        migrated_env, seeder, token_server, db, fernet_keys, make):
    plain = "1//0g-secret-refresh-token-" + Fernet.generate_key().decode()[:12]
    bad = make(fernet_keys, plain)
    a = seeder.add_account("google", expires_in=-60, raw={"refresh_token": bad})
    log = once_fails_cleanly(migrated_env, seeder, db, a, "undecryptable_refresh_token")
    assert token_server.requests == [], "nothing may be sent for an undecryptable token"
    assert plain not in log and bad not in log, "token material leaked into the log"


def test_account_of_provider_without_config_section_is_left_alone_and_reported(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("github", expires_in=-60)
    ok = seeder.add_account("google", expires_in=-60)
    before = seeder.row(a.id)
    migrated_env.write_config({"provider.github": None})
    rc, log = migrated_env.run_once()
    assert rc == 0, f"an unconfigured provider is not a failed attempt; saw {rc}\n{log[-3000:]}"
    assert seeder.row(a.id) == before, "an unconfigured provider's account must be untouched"
    assert token_server.requests_for(a.account_key) == [], "nothing may be sent for it"
    st = state_of(db, a.id)
    assert st is None or (st["last_error"] is None and st["attempts"] == 0
                          and st["lease_owner"] is None), (
        f"an unconfigured provider is not an attempt: expected no error, saw {st}")
    assert "[provider.github]" in log and "left alone" in log, (
        f"expected the log to report the accounts left alone; log:\n{log[-3000:]}")
    assert token_server.refresh_count(ok.account_key) == 1, "configured providers carry on"
    status = migrated_env.ctl("status")
    out = status.stdout.decode()
    assert status.returncode == 0 and "github" in out and "left alone" in out, (
        f"expected `oauth-refreshctl status` to report github's accounts left alone:\n{out}"
        f"\n{status.stderr}")


def test_null_scope_sends_microsoft_just_offline_access(migrated_env, seeder, token_server, db):
    a = seeder.add_account("microsoft", expires_in=-60, scope=None)
    rc, log = migrated_env.run_once()
    assert rc == 0, log[-3000:]
    reqs = token_server.requests_for(a.account_key)
    assert len(reqs) == 1, [r.outcome for r in reqs]
    assert reqs[0].scope == "offline_access", (
        f"expected scope exactly 'offline_access' for a NULL stored scope, saw {reqs[0].scope!r}")
    assert reqs[0].outcome == "refreshed", reqs[0].outcome
    row = seeder.read(a.id)
    assert row["refresh_token"] == token_server.current_refresh_token(a.account_key)


@pytest.mark.parametrize("provider", ["google", "github"])
def test_null_scope_is_fine_for_providers_that_take_none(
        migrated_env, seeder, token_server, db, provider):
    a = seeder.add_account(provider, expires_in=-60, scope=None)
    rc, log = migrated_env.run_once()
    assert rc == 0, log[-3000:]
    reqs = token_server.requests_for(a.account_key)
    assert len(reqs) == 1 and reqs[0].scope is None, [(r.outcome, r.scope) for r in reqs]
    assert seeder.read(a.id)["access_token"] == token_server.issued_access_tokens(a.account_key)[-1]
