"""Whose failure is it (issue 11, part 1): the providers' documented answers, played by the
loopback token server, against the real daemon and PostgreSQL.

- An answer about one user's token or tenant (Microsoft unauthorized_client AADSTS700016)
  marks that account, with its own error code, and the provider keeps going.
- A client-wide configuration error (invalid_client, Google deleted_client) pauses the
  provider, says so once, and one account probes it every [refresh] config_error_probe: it
  resumes by itself once the secret file is fixed, without a SIGHUP.
- The provider's overload (Google's 403 HTML page, a Retry-After on a 503) pauses the
  provider and charges the account no attempt.

The rows these answers come from are in docs/providers.md."""

import os
import re
import time

import pytest

from lib.daemon import wait_until

# Google's rate-limit page (GoogleCloudPlatform/gsutil#114, google-oauth-java-client#57).
GOOGLE_403_PAGE = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    "  <title>Error 403 (Forbidden)!!1</title>\n"
    "  <p><b>403.</b> <ins>That's an error.</ins>\n"
    "  <p>We're sorry, but you do not have access to this page. <ins>That's all we know.</ins>\n")


def state_of(db, account_id):
    rows = db.execute(
        "SELECT attempts, last_error, revoked, retry_at, lease_owner "
        "FROM oauth_refreshd.account_state WHERE account_id = %s", (account_id,))
    return dict(zip(("attempts", "last_error", "revoked", "retry_at", "lease_owner"), rows[0]))


def continuous(env, overrides=None):
    if overrides:
        env.write_config(overrides)
    d = env.daemon("continuous")
    d.start()
    d.wait_for_log("ready", timeout=30)
    return d


def loud_lines(d):
    return [ln for ln in d.log().splitlines() if "rejects our client credentials" in ln]


def test_microsoft_unauthorized_client_in_one_tenant_marks_only_that_account(
        migrated_env, seeder, token_server, events, db):
    key = seeder.new_account_key("microsoft")
    token_server.inject(
        "error", provider="microsoft", account=key, count=None, status=400,
        error="unauthorized_client", error_codes=[700016],
        description="AADSTS700016: Application with identifier 'test-microsoft-client' was not "
                    "found in the directory 'Contoso'.")
    tenant_gone = seeder.add_account("microsoft", account_key=key, expires_in=-60)
    before = seeder.row(tenant_gone.id)
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h", "retry_min": "1s"}})

    revoked = events.wait_for(lambda e: e["event"] == "revoked"
                              and e["account_id"] == tenant_gone.id, timeout=15)
    assert revoked[0]["error"] == "unauthorized_client", revoked
    st = state_of(db, tenant_gone.id)
    assert st["revoked"] is True and st["last_error"] == "unauthorized_client", st
    assert seeder.row(tenant_gone.id) == before, "the user must reconnect; the row is untouched"
    d.wait_for_log(rf"account {tenant_gone.id} \(microsoft\): refresh token refused "
                   rf"\(unauthorized_client\), the user must reconnect: unauthorized_client "
                   rf"\(AADSTS700016\)", timeout=5)

    # The other users of the same provider keep being refreshed: nothing was paused.
    others = [seeder.add_account("microsoft", expires_in=-60) for _ in range(3)]
    for a in others:
        events.wait_for(lambda e, a=a: e["event"] == "refreshed" and e["account_id"] == a.id,
                        timeout=15)
    log = d.log()
    assert "rejects our client credentials" not in log, "one tenant's answer paused microsoft"
    assert "provider microsoft paused" not in log
    assert [e for e in events.events_for(tenant_gone.id) if e["event"] != "revoked"] == []
    assert len(token_server.requests_for(key)) == 1, "a reconnect-needed account is not retried"
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_invalid_client_pauses_once_and_a_probe_resumes_after_the_secret_file_is_fixed(
        migrated_env, seeder, token_server, events, db):
    accts = [seeder.add_account("google", expires_in=-60) for _ in range(4)]
    right = migrated_env.clients["google"]
    migrated_env.clients["google"] = (right[0], "an-expired-google-secret")
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h", "retry_min": "1s",
                                              "retry_max": "4s", "config_error_probe": "2s"}})
    d.wait_for_log(r"provider google rejects our client credentials \(invalid_client\)",
                   timeout=15)
    # The other first requests may still be arriving on a busy machine: let them land
    # (the first probe is 2 s after the pause), then count the probes alone.
    time.sleep(1.0)
    settled = len(token_server.requests)
    time.sleep(5)
    probes = token_server.requests[settled:]
    # One account every 2 s, not every account on its own backoff.
    assert 1 <= len(probes) <= 4, f"expected a probe every 2s, saw {len(probes)} requests"
    assert all(not r.client_ok for r in token_server.requests)
    assert d.log().count("still refuses our client registration") >= 1, d.log_tail()
    assert token_server.successful_requests() == []

    with open(os.path.join(migrated_env.dir, "google.secret"), "w") as f:
        f.write(right[1] + "\n")  # fixed on disk; no SIGHUP
    for a in accts:
        events.wait_for(lambda e, a=a: e["event"] == "refreshed" and e["account_id"] == a.id,
                        timeout=30)
    d.wait_for_log(r"provider google resumed", timeout=5)
    assert len(loud_lines(d)) == 1, f"said loudly once per provider, saw {loud_lines(d)}"
    for a in accts:
        st = state_of(db, a.id)
        assert st["attempts"] == 0 and st["last_error"] is None, st
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_google_deleted_client_is_a_configuration_error_of_the_provider(
        migrated_env, seeder, token_server, db):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("error", provider="google", count=None, status=401,
                        error="deleted_client", description="The OAuth client was deleted.")
    rc, log = migrated_env.run_once()
    assert rc == 1, f"a configuration error fails --once: saw {rc}\n{log}"
    assert re.search(r"provider google rejects our client credentials \(deleted_client\)", log), log
    st = state_of(db, a.id)
    assert st["revoked"] is False and st["last_error"] == "deleted_client", st


def test_google_403_html_page_pauses_the_provider_without_charging_the_account(
        migrated_env, seeder, token_server, events, db):
    a = seeder.add_account("google", expires_in=-60)
    token_server.inject("status", provider="google", account=a.account_key, count=1, status=403,
                        body=GOOGLE_403_PAGE)
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h", "retry_min": "3s",
                                              "retry_max": "1min"}})
    first = wait_until(lambda: [r for r in token_server.requests_for(a.account_key)
                                if r.end is not None], timeout=15,
                       message="the 403 answer")[0]
    assert first.status == 403
    d.wait_for_log(r"provider google paused for 3s after http_403", timeout=5)
    # Released untouched: no attempt charged, no error recorded, no failed event.
    wait_until(lambda: state_of(db, a.id)["lease_owner"] is None, timeout=5,
               message="the claim given back")
    st = state_of(db, a.id)
    assert st["attempts"] == 0 and st["last_error"] is None and st["retry_at"] is None, st
    # Another google account due meanwhile waits for the pause too.
    b = seeder.add_account("google", expires_in=-60)

    for x in (a, b):
        events.wait_for(lambda e, x=x: e["event"] == "refreshed" and e["account_id"] == x.id,
                        timeout=20)
    assert events.events_for(a.id, "failed") == [], "the provider's overload is no failed attempt"
    second = token_server.requests_for(a.account_key)[1]
    assert second.wall_start - first.wall_start >= 2.8, "the pause must hold the account back"
    b_first = token_server.requests_for(b.account_key)[0]
    assert b_first.wall_start - first.wall_start >= 2.8, "the pause holds the whole provider"
    d.wait_for_log(r"provider google resumed", timeout=5)
    d.terminate()


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_retry_after_on_a_503_pauses_the_provider_for_that_long(
        migrated_env, seeder, token_server, events, db, as_date):
    a = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", provider="microsoft", account=a.account_key, count=1,
                        retry_after=4, retry_after_date=as_date)
    d = continuous(migrated_env, {"refresh": {"scan_interval": "1h", "retry_min": "1s",
                                              "retry_max": "1min"}})
    first = wait_until(lambda: [r for r in token_server.requests_for(a.account_key)
                                if r.end is not None], timeout=15, message="the 503")[0]
    b = seeder.add_account("microsoft", expires_in=-60)
    for x in (a, b):
        events.wait_for(lambda e, x=x: e["event"] == "refreshed" and e["account_id"] == x.id,
                        timeout=30)
    # An HTTP date has whole seconds: up to one second of it is gone on arrival.
    least = 2.9 if as_date else 3.9
    second = token_server.requests_for(a.account_key)[1]
    assert second.wall_start - first.wall_start >= least, "Retry-After must be honoured"
    b_first = token_server.requests_for(b.account_key)[0]
    assert b_first.wall_start - first.wall_start >= least, (
        "Retry-After pauses the provider, not only the account that got it")
    assert events.events_for(a.id, "failed") == [], "the provider's overload is no failed attempt"
    assert state_of(db, a.id)["attempts"] == 0
    d.terminate()
