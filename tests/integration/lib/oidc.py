"""A real OpenID Provider for the tests: tests/oidc/server.mjs (npm oidc-provider).

Owns: starting and stopping that node process on a free loopback port with the
test PKI's certificate, minting and revoking grants through its test-only admin
API, and the two standard endpoints the tests judge with (token introspection,
and the token endpoint for a probe refresh). scripts/test installs the pinned
package (`npm ci` in tests/oidc) before the suite runs.
Must never: print a token, or listen beyond loopback.
"""

import base64
import contextlib
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from .daemon import DaemonEnv, source_dir
from .pgcluster import free_port
from .seed import Seeder


def oidc_dir():
    return os.path.join(source_dir(), "tests", "oidc")


class OidcProvider:
    def __init__(self, pki, clients, log_path, access_ttl=3600):
        """clients: {client_id: (secret, token_endpoint_auth_method)}."""
        self.pki = pki
        self.clients = dict(clients)
        self.log_path = log_path
        self.port = free_port()
        self.access_ttl = access_ttl
        self.proc = None
        self.issuer = f"https://127.0.0.1:{self.port}"
        self.ctx = ssl.create_default_context(cafile=pki.ca_file)

    @property
    def token_url(self):
        return self.issuer + "/token"

    def start(self, timeout=30):
        modules = os.path.join(oidc_dir(), "node_modules", "oidc-provider")
        if not os.path.isdir(modules):
            raise RuntimeError(f"{modules} is missing: run `npm ci` in tests/oidc "
                               "(scripts/test does)")
        clients = [{"client_id": cid, "client_secret": sec, "token_endpoint_auth_method": auth}
                   for cid, (sec, auth) in self.clients.items()]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["node", os.path.join(oidc_dir(), "server.mjs"), "--port", str(self.port),
             "--cert", self.pki.cert_file, "--key", self.pki.key_file,
             "--clients", json.dumps(clients), "--access-ttl", str(self.access_ttl)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=oidc_dir())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("oidc-provider exited: " + self.log())
            try:
                self._get("/.well-known/openid-configuration")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError("oidc-provider did not start: " + self.log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        self.proc = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # ----- HTTP ------------------------------------------------------------------------------

    def _request(self, path, data=None, headers=None, method=None):
        req = urllib.request.Request(self.issuer + path, data=data, headers=headers or {},
                                     method=method)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def _get(self, path):
        status, body = self._request(path)
        if status != 200:
            raise urllib.error.URLError(f"{path}: HTTP {status}")
        return body

    def _post_json(self, path, obj):
        status, body = self._request(path, json.dumps(obj).encode(),
                                     {"Content-Type": "application/json"}, "POST")
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status} {body}")
        return body

    def _post_form(self, path, form, client_id):
        """POST as client_id, authenticated the way it is registered (the provider
        requires the same method at its introspection endpoint)."""
        secret, method = self.clients[client_id]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if method == "client_secret_basic":
            # RFC 6749 §2.3.1: each part form-urlencoded, then joined and base64-encoded.
            pair = urllib.parse.quote(client_id, safe="") + ":" + urllib.parse.quote(secret, safe="")
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form = dict(form, client_id=client_id, client_secret=secret)
        return self._request(path, urllib.parse.urlencode(form).encode(), headers, "POST")

    # ----- the tests' view -------------------------------------------------------------------

    def discovery(self):
        return self._get("/.well-known/openid-configuration")

    def mint(self, client_id, sub, scope="openid offline_access"):
        """A new grant for (client, user); returns (refresh token, grant id)."""
        r = self._post_json("/_test/grant", {"client_id": client_id, "sub": sub, "scope": scope})
        return r["refresh_token"], r["grant_id"]

    def revoke_grant(self, grant_id):
        self._post_json("/_test/revoke", {"grant_id": grant_id})

    def stats(self):
        return self._get("/_test/stats")

    def introspect(self, token, client_id):
        """The provider's own word on a token: the introspection response (RFC 7662)."""
        status, body = self._post_form("/token/introspection", {"token": token}, client_id)
        if status != 200:
            raise RuntimeError(f"introspection: HTTP {status} {body}")
        return body

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class OidcAccounts:
    """Accounts of the application whose refresh tokens the real provider minted, one grant
    each. client_of: {provider name in oauth_accounts: the oidc client id its dialect uses}."""

    def __init__(self, db, keys, oidc, client_of, scope="openid offline_access"):
        self.seeder = Seeder(db, keys, None)
        self.oidc = oidc
        self.client_of = dict(client_of)
        self.scope = scope
        self.grants = {}  # account id -> grant id

    def add(self, provider, client_id=None, sub=None):
        client_id = client_id or self.client_of[provider]
        sub = sub or self.seeder.new_account_key(provider)
        rt, grant = self.oidc.mint(client_id, sub, self.scope)
        acct = self.seeder.add_account(provider, sub, refresh_token=rt, scope=self.scope,
                                       expires_in=-60)
        self.grants[acct.id] = grant
        return acct

    def make_due(self, ids):
        self.seeder.db.execute("UPDATE oauth_accounts SET expires_at = now() - interval '1 minute' "
                               "WHERE id = ANY(%s)", (list(ids),))


@contextlib.contextmanager
def oidc_daemon_env(request, dir, db, keys, pki, oidc, clients, client_of, sections):
    """A migrated DaemonEnv in dir whose providers (client_of: provider -> oidc client id,
    clients: client id -> (secret, auth method)) refresh against oidc; sections: the
    [provider.*] overrides. On a failed test, the daemon's and the provider's logs are
    printed."""
    os.makedirs(dir, exist_ok=True)
    creds = {p: (cid, clients[cid][0]) for p, cid in client_of.items()}
    env = DaemonEnv(dir, db.dsn, keys, ca_file=pki.ca_file, providers=tuple(client_of),
                    clients=creds)
    env.write_config(sections)
    env.migrate()
    try:
        yield env
    finally:
        rep = getattr(request.node, "rep_call", None)
        failed = rep is not None and rep.failed
        if failed:
            print("---- oidc-provider log ----\n" + oidc.log())
        env.cleanup(dump_logs=failed)

