"""The generic RFC 6749 dialect (dialect = oauth2) against a real authorization server.

oidc-provider (tests/oidc/server.mjs) rotates the refresh token on every use and
revokes the whole grant when a consumed one comes back, and it judges by its own
introspection endpoint. The application has widened the provider check constraint
of oauth_accounts for two more providers, as SPEC §3 says applications do:
- "keycloak": `issuer =` — the daemon reads the token endpoint and the supported
  client authentication from the provider's discovery document, and picks
  client_secret_basic; its client id and secret hold characters that RFC 6749
  §2.3.1's form-urlencoding must escape before the Basic header is made;
- "okta": `token_url =` with `client_auth = client_secret_post` and `send_scope`.
"""

import base64
import os
import re
import signal
import time

import pytest

from lib.daemon import wait_until
from lib.oidc import OidcAccounts, OidcProvider, oidc_daemon_env
from lib.sdnotify_socket import NotifySocket, notify_daemon
from lib.spoolfmt import spool_line

SCOPE = "openid offline_access"
CLIENTS = {
    # ':' would end a Basic user id, '%' and '+' would change it: all must be escaped.
    "rp:keycloak/1": ("kc-secret+/:%" + "k" * 24, "client_secret_basic"),
    "rp-okta": ("okta-secret-" + "o" * 24, "client_secret_post"),
}
GENERIC = {"keycloak": "rp:keycloak/1", "okta": "rp-okta"}


def widen_provider_check(db):
    """What the application does to store accounts of other providers."""
    db.execute("ALTER TABLE oauth_accounts DROP CONSTRAINT oauth_accounts_provider_check")
    db.execute("ALTER TABLE oauth_accounts ADD CONSTRAINT oauth_accounts_provider_check CHECK "
               "(provider IN ('google', 'github', 'microsoft', 'keycloak', 'okta'))")


@pytest.fixture
def oidc(pki, tmp_path):
    with OidcProvider(pki, CLIENTS, str(tmp_path / "oidc.log")) as op:
        yield op


def generic_sections(oidc, issuer=None):
    return {
        "provider.keycloak": {"dialect": "oauth2", "issuer": issuer or oidc.issuer},
        "provider.okta": {"dialect": "oauth2", "token_url": oidc.token_url,
                          "client_auth": "client_secret_post", "send_scope": "yes"},
    }


@pytest.fixture
def generic_env(request, tmp_path, db, fernet_keys, pki, oidc):
    widen_provider_check(db)
    with oidc_daemon_env(request, str(tmp_path / "daemon"), db, fernet_keys, pki, oidc, CLIENTS,
                         GENERIC, generic_sections(oidc)) as env:
        yield env


@pytest.fixture
def accounts(db, fernet_keys, oidc):
    return OidcAccounts(db, fernet_keys, oidc, GENERIC, SCOPE)


def test_the_server_offers_both_client_authentication_methods(oidc):
    meta = oidc.discovery()
    assert meta["issuer"] == oidc.issuer
    assert {"client_secret_basic", "client_secret_post"} <= set(
        meta["token_endpoint_auth_methods_supported"])


def test_generic_providers_rotate_through_discovery_and_token_url(generic_env, accounts, oidc):
    """Keycloak by discovery with client_secret_basic, Okta by token_url with
    client_secret_post: several accounts, three generations, each judged live by the
    provider itself, and it never saw a reuse or a failed client authentication."""
    per_provider = 40
    accts = [accounts.add(p) for p in GENERIC for _ in range(per_provider)]
    ids = [a.id for a in accts]
    previous = {a.id: a.refresh_token for a in accts}
    generations = 3
    t0 = time.monotonic()
    for gen in range(1, generations + 1):
        if gen > 1:
            accounts.make_due(ids)
        rc, log = generic_env.run_once(timeout=300)
        assert rc == 0, f"generation {gen}: --once exited {rc}\n{log[-3000:]}"
        if gen == 1:
            assert "provider keycloak: discovered token endpoint " + oidc.token_url + \
                " (client_secret_basic)" in log, log[-3000:]
        for a in accts:
            row = accounts.seeder.read(a.id)
            cid = GENERIC[a.provider]
            assert row["refresh_token"] != previous[a.id], \
                f"generation {gen}: {a.provider} account {a.id} kept a rotated refresh token"
            info = oidc.introspect(row["refresh_token"], cid)
            assert info.get("active") is True, \
                f"generation {gen}: account {a.id}: refresh token not active: {info} {oidc.stats()}"
            assert oidc.introspect(row["access_token"], cid).get("active") is True
            assert oidc.introspect(previous[a.id], cid).get("active") is False
            assert row["id_token"], "an openid grant returns an id_token; the daemon stores it"
            previous[a.id] = row["refresh_token"]
        stats = oidc.stats()
        assert stats["reuse"] == 0 and not stats["errors"], f"generation {gen}: {stats}"
        assert stats["refreshes"] == gen * len(accts), stats
    print(f"oidc-provider, generic dialect: {len(accts)} accounts x {generations} generations "
          f"in {time.monotonic() - t0:.1f}s, no reuse")


def test_an_issuer_the_document_does_not_name_is_refused_and_nothing_is_claimed(
        generic_env, accounts, oidc):
    """OpenID Connect Discovery §4.3: the document's issuer must be the configured one.
    Until discovery succeeds the provider is not claimed; --once says the run failed."""
    # Same host and path, but not the same string: the document names oidc.issuer.
    generic_env.write_config(generic_sections(oidc, issuer=oidc.issuer + "/."))
    kc = accounts.add("keycloak")
    ok = accounts.add("okta")
    rc, log = generic_env.run_once(timeout=60)
    assert rc == 1, log[-3000:]
    assert "provider keycloak: OpenID Connect discovery at " + oidc.issuer + "/. failed: the " \
        "discovery document names another issuer" in log, log[-3000:]
    assert "not claimed until OpenID Connect discovery" in log
    assert accounts.seeder.read(kc.id)["refresh_token"] == kc.refresh_token
    assert oidc.stats()["refreshes"] == 1, "only okta's account was refreshed"
    assert accounts.seeder.read(ok.id)["refresh_token"] != ok.refresh_token


def test_check_config_validates_generic_sections_without_fetching(generic_env, oidc):
    oidc.stop()  # nothing answers: --check-config must not need it
    rc, log = generic_env.check_config()
    assert rc == 0, log
    assert "2 providers" in log, log
    text = generic_env.config_text().replace("dialect = oauth2\nissuer",
                                             "dialect = oauth2\ntoken_url = " + oidc.token_url +
                                             "\nissuer")
    cfg = generic_env.write_config(text=text, path=os.path.join(generic_env.dir, "both.conf"))
    rc, log = generic_env.check_config(config=cfg)
    assert rc == 78, log
    assert "[provider.keycloak] issuer: issuer and token_url are mutually exclusive" in log, log


def test_a_spooled_generic_result_is_replayed_after_a_restart(
        generic_env, accounts, oidc, fernet_keys):
    """A previous daemon got a rotated refresh token from the provider and spooled it before
    it died: the spool names the provider (ids of generic providers differ between
    processes), and the next start writes it. The provider's own word: the replayed token
    is the live one, and the next generation refreshes with it without a reuse."""
    acct = accounts.add("keycloak")
    cid = GENERIC["keycloak"]
    status, body = oidc._post_form("/token", {"grant_type": "refresh_token",
                                             "refresh_token": acct.refresh_token}, cid)
    assert status == 200, body
    row = accounts.seeder.read(acct.id)
    raw = base64.urlsafe_b64decode(fernet_keys.primary)
    expires = int(time.time()) + 3600
    seg = os.path.join(generic_env.state_dir, "spool", "seg-%020d.spool" % 9)
    os.makedirs(os.path.dirname(seg), mode=0o700, exist_ok=True)
    with open(seg, "w") as f:
        f.write(spool_line(raw, acct.id, "keycloak", expires * 1_000_000,
                           row["refresh_token_ciphertext"],
                           fernet_keys.encrypt(body["access_token"]),
                           fernet_keys.encrypt(body["refresh_token"]),
                           id_token=fernet_keys.encrypt(body["id_token"]), scope=SCOPE,
                           token_type="Bearer"))
    # This process meets okta first: keycloak's id here is not the one it had.
    text = generic_env.config_text()
    kc = text.index("[provider.keycloak]")
    okta = text.index("[provider.okta]")
    generic_env.write_config(text=text[okta:] + "\n" + text[:okta] if okta > kc else text)
    rc, log = generic_env.run_once(timeout=60)
    assert rc == 0, log[-3000:]
    assert "replaying 1 spooled result" in log, log[-3000:]
    got = accounts.seeder.read(acct.id)
    assert got["refresh_token"] == body["refresh_token"]
    assert oidc.introspect(got["refresh_token"], cid).get("active") is True
    accounts.make_due([acct.id])
    rc, log = generic_env.run_once(timeout=60)
    assert rc == 0, log[-3000:]
    got = accounts.seeder.read(acct.id)
    assert got["refresh_token"] != body["refresh_token"]
    assert oidc.introspect(got["refresh_token"], cid).get("active") is True
    assert oidc.stats()["reuse"] == 0, oidc.stats()


def test_a_reload_that_changes_the_generic_providers_keeps_refreshing(
        generic_env, accounts, oidc):
    """Ids of generic providers are given once per process: a reload that drops one and
    names the other first confuses no job in flight and no later claim. The issuer is
    discovered again at the reload, and what was found stays in use meanwhile."""
    kc = [accounts.add("keycloak") for _ in range(5)]
    ok = [accounts.add("okta") for _ in range(5)]
    d = generic_env.daemon()
    d.start()

    def rotated(accts, previous):
        return all(accounts.seeder.read(a.id)["refresh_token"] != previous[a.id] for a in accts)
    first = {a.id: a.refresh_token for a in kc + ok}
    assert wait_until(lambda: rotated(kc + ok, first), timeout=60, message="first generation")
    text = generic_env.config_text()
    start = text.index("[provider.okta]")
    end = text.find("\n[", start + 1)
    okta_section = text[start:] if end < 0 else text[start:end + 1]
    without_okta = text.replace(okta_section, "")
    gitlab = ("[provider.gitlab]\ndialect = oauth2\ntoken_url = " + oidc.token_url +
              "\nclient_id = rp-gitlab\nclient_secret = unused\n\n")
    generic_env.write_config(text=gitlab + without_okta)
    second = {a.id: accounts.seeder.read(a.id)["refresh_token"] for a in kc + ok}
    accounts.make_due([a.id for a in kc + ok])
    d.send_signal(signal.SIGHUP)
    d.wait_for_log(r"configuration reloaded", timeout=30)
    assert wait_until(lambda: rotated(kc, second), timeout=60, message="keycloak after reload")
    assert len(re.findall(r"provider keycloak: discovered token endpoint", d.log())) == 2, \
        "discovered at start and again at the reload"
    time.sleep(1)
    for a in ok:
        assert accounts.seeder.read(a.id)["refresh_token"] == second[a.id], \
            "okta's section is gone: its accounts are left alone"
    for a in kc:
        row = accounts.seeder.read(a.id)
        assert oidc.introspect(row["refresh_token"], GENERIC["keycloak"]).get("active") is True
    assert oidc.stats()["reuse"] == 0, oidc.stats()
    d.terminate()


def test_until_discovery_succeeds_status_says_so_and_a_reload_that_fixes_it_resumes(
        generic_env, accounts, oidc):
    """A provider whose discovery failed is named in STATUS= and not claimed; discovery is
    tried again; the reload that fixes the issuer makes it claimable, and STATUS= forgets it."""
    generic_env.write_config(dict(generic_sections(oidc, issuer=oidc.issuer + "/."),
                                  refresh={"retry_min": "1s", "retry_max": "2s"}))
    kc = accounts.add("keycloak")
    ns = NotifySocket()
    try:
        d = notify_daemon(generic_env, ns)
        d.start()
        ns.wait_status(r"waiting for discovery: keycloak", timeout=30)
        d.wait_for_log(r"provider keycloak: OpenID Connect discovery at .* failed: .*trying "
                       r"again in", timeout=10)
        size = d.log_size()
        d.wait_for_log(r"provider keycloak: OpenID Connect discovery at .* failed", timeout=15,
                       after=size)  # tried again
        assert accounts.seeder.read(kc.id)["refresh_token"] == kc.refresh_token
        generic_env.write_config(generic_sections(oidc))
        since = time.monotonic()
        d.send_signal(signal.SIGHUP)
        d.wait_for_log(r"provider keycloak: discovered token endpoint", timeout=30, after=size)
        assert wait_until(lambda: accounts.seeder.read(kc.id)["refresh_token"] != kc.refresh_token,
                          timeout=30, message="keycloak refreshed after the fix")
        row = accounts.seeder.read(kc.id)
        assert oidc.introspect(row["refresh_token"], GENERIC["keycloak"]).get("active") is True
        m = ns.wait_for(lambda m: "STATUS" in m and "refreshed" in m.get("STATUS", ""),
                        since=since, timeout=30)
        deadline = time.monotonic() + 20
        while "waiting for discovery" in m.get("STATUS", "") and time.monotonic() < deadline:
            m = ns.wait_for(lambda x: "STATUS" in x, since=m.t + 0.001, timeout=20)
        assert "waiting for discovery" not in m.get("STATUS", ""), m
        d.terminate()
    finally:
        ns.close()
