"""The daemon against an authorization server this project did not write.

oidc-provider (npm, pinned in tests/oidc/package-lock.json) is a certified
OpenID Provider. It rotates the refresh token on every use and, when a consumed
one is presented again, revokes the whole grant: the strictest judge of "never
burn a rotated refresh token" we can run here. The google, microsoft and
github dialects are pointed at its token endpoint (all three authenticate with
client_secret_post, which it supports); it judges by its own introspection
endpoint, not by our database alone.
"""

import os
import signal
import time

import pytest

from lib.daemon import wait_until
from lib.oidc import OidcAccounts, OidcProvider, oidc_daemon_env

SCOPE = "openid offline_access"
CLIENTS = {
    "rp-google": ("google-secret-" + "g" * 24, "client_secret_post"),
    "rp-microsoft": ("microsoft-secret-" + "m" * 24, "client_secret_post"),
    "rp-github": ("github-secret-" + "h" * 24, "client_secret_post"),
    "rp-other": ("other-secret-" + "o" * 24, "client_secret_post"),
}
DIALECT_CLIENT = {"google": "rp-google", "microsoft": "rp-microsoft", "github": "rp-github"}


@pytest.fixture
def oidc(pki, tmp_path):
    with OidcProvider(pki, CLIENTS, str(tmp_path / "oidc.log")) as op:
        yield op


@pytest.fixture
def oidc_env(request, tmp_path, db, fernet_keys, pki, oidc):
    with oidc_daemon_env(request, str(tmp_path / "daemon"), db, fernet_keys, pki, oidc, CLIENTS,
                         DIALECT_CLIENT, {f"provider.{p}": {"token_url": oidc.token_url}
                                          for p in DIALECT_CLIENT}) as env:
        yield env


@pytest.fixture
def accounts(db, fernet_keys, oidc):
    return OidcAccounts(db, fernet_keys, oidc, DIALECT_CLIENT, SCOPE)


def test_discovery_names_the_token_endpoint_the_dialects_use(oidc):
    meta = oidc.discovery()
    assert meta["token_endpoint"] == oidc.token_url
    assert "client_secret_post" in meta["token_endpoint_auth_methods_supported"]
    assert "refresh_token" in meta["grant_types_supported"]


def test_generations_of_rotation_keep_every_stored_token_live(oidc_env, accounts, oidc):
    """A few hundred accounts, three generations: after each, the provider itself says
    every stored refresh token and access token is active, and it never saw a reuse."""
    per_provider = 100
    accts = [accounts.add(p) for p in DIALECT_CLIENT for _ in range(per_provider)]
    ids = [a.id for a in accts]
    generations = 3
    t0 = time.monotonic()
    previous = {a.id: a.refresh_token for a in accts}
    for gen in range(1, generations + 1):
        if gen > 1:
            accounts.make_due(ids)
        rc, log = oidc_env.run_once(timeout=300)
        assert rc == 0, f"generation {gen}: --once exited {rc}\n{log[-3000:]}"
        for a in accts:
            row = accounts.seeder.read(a.id)
            cid = DIALECT_CLIENT[a.provider]
            assert row["refresh_token"] != previous[a.id], \
                f"generation {gen}: account {a.id} kept a refresh token the provider rotated"
            rt_info = oidc.introspect(row["refresh_token"], cid)
            assert rt_info.get("active") is True, \
                f"generation {gen}: account {a.id}: stored refresh token not active: {rt_info} {oidc.stats()}"
            at_info = oidc.introspect(row["access_token"], cid)
            assert at_info.get("active") is True, \
                f"generation {gen}: account {a.id}: stored access token not active: {at_info}"
            # The consumed one is dead at the provider (and introspecting it is not a reuse).
            assert oidc.introspect(previous[a.id], cid).get("active") is False
            assert row["id_token"], "an openid grant returns an id_token; the daemon stores it"
            previous[a.id] = row["refresh_token"]
        stats = oidc.stats()
        assert stats["reuse"] == 0, f"generation {gen}: the provider saw reuse: {stats}"
        assert stats["refreshes"] == gen * len(accts), stats
    elapsed = time.monotonic() - t0
    print(f"oidc-provider: {len(accts)} accounts x {generations} generations = "
          f"{generations * len(accts)} refreshes in {elapsed:.1f}s, no reuse")


def test_a_grant_revoked_at_the_provider_is_revoked_and_the_row_untouched(
        oidc_env, accounts, oidc, events):
    gone = accounts.add("google")
    kept = accounts.add("microsoft")
    oidc.revoke_grant(accounts.grants[gone.id])
    before = accounts.seeder.row(gone.id)
    rc, log = oidc_env.run_once()
    assert rc == 0, log  # revoked is a final answer, not a failure of the run
    assert accounts.seeder.row(gone.id) == before, "a revoked account's row must not change"
    state = accounts.seeder.db.execute(
        "SELECT revoked, last_error FROM oauth_refreshd.account_state WHERE account_id = %s",
        (gone.id,))[0]
    assert state[0] is True and state[1] == "invalid_grant", state
    events.wait_for(lambda e: e.get("event") == "revoked" and e.get("account_id") == gone.id,
                    timeout=10)
    row = accounts.seeder.read(kept.id)
    assert oidc.introspect(row["refresh_token"], "rp-microsoft").get("active") is True


def test_a_refresh_token_of_another_client_fails_that_account_only(oidc_env, accounts, oidc):
    foreign = accounts.add("google", client_id="rp-other")
    others = [accounts.add("google") for _ in range(5)]
    rc, log = oidc_env.run_once()
    assert rc == 0, log
    state = accounts.seeder.db.execute(
        "SELECT revoked, last_error FROM oauth_refreshd.account_state WHERE account_id = %s",
        (foreign.id,))[0]
    assert state[0] is True, f"a token minted for another client is that account's problem: {state}"
    for a in others:
        row = accounts.seeder.read(a.id)
        assert oidc.introspect(row["refresh_token"], "rp-google").get("active") is True
    assert "rejects our client credentials" not in log, "one account's token paused the provider"


def test_a_wrong_client_secret_pauses_the_provider_once_and_sighup_resumes(
        oidc_env, accounts, oidc):
    accts = [accounts.add("google") for _ in range(4)]
    secret_file = os.path.join(oidc_env.dir, "google.secret")
    with open(secret_file, "w") as f:
        f.write("not-the-secret\n")
    d = oidc_env.daemon()
    d.start()
    d.wait_for_log(r"provider google rejects our client credentials \(invalid_client\)", timeout=30)
    time.sleep(2)
    assert len([ln for ln in d.log().splitlines() if "rejects our client credentials" in ln]) == 1, \
        "the configuration error is said once per provider, not once per account"
    assert oidc.stats()["refreshes"] == 0
    with open(secret_file, "w") as f:
        f.write(CLIENTS["rp-google"][0] + "\n")
    d.send_signal(signal.SIGHUP)

    def all_live():
        for a in accts:
            row = accounts.seeder.read(a.id)
            if row["refresh_token"] == a.refresh_token:
                return False
        return True
    assert wait_until(all_live, timeout=60, message="accounts refreshed after SIGHUP")
    for a in accts:
        row = accounts.seeder.read(a.id)
        assert oidc.introspect(row["refresh_token"], "rp-google").get("active") is True
    assert oidc.stats()["reuse"] == 0
    d.terminate()


def test_the_judge_catches_a_burnt_refresh_token(oidc_env, accounts, oidc):
    """The judge is strict: an account whose stored refresh token was already used (as if a
    daemon had lost the rotated one) is refused, the provider counts a reuse and revokes the
    whole grant, and the daemon marks the account revoked."""
    acct = accounts.add("microsoft")
    status, body = oidc._post_form("/token", {"grant_type": "refresh_token",
                                             "refresh_token": acct.refresh_token}, "rp-microsoft")
    assert status == 200, body
    rc, log = oidc_env.run_once()
    assert rc == 0, log
    assert oidc.stats()["reuse"] == 1, oidc.stats()
    assert oidc.introspect(body["refresh_token"], "rp-microsoft").get("active") is False, \
        "reuse revokes the grant: the token the client did get is dead too"
    revoked = accounts.seeder.db.scalar(
        "SELECT revoked FROM oauth_refreshd.account_state WHERE account_id = %s", (acct.id,))
    assert revoked is True
