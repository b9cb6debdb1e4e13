#!/usr/bin/python3
"""Loopback HTTPS token server speaking the Google, GitHub and Microsoft dialects.

What it owns: a fake of the three providers' refresh-token endpoints (see
PROVIDERS.md) with per-account state keyed by refresh token, a record of every
request (to prove "never burn, never double"), and fault injection that tests
switch on from Python. It runs either inside a test process (TokenServer.start()
runs aiohttp on its own asyncio loop in a background thread, so tests call its
methods directly) or standalone for the try-it command and benchmarks:

    tests/tokenserver/tokenserver.py --port P --cert C --key K [--delay-ms N] [--seed-file F]

What it must never do: listen on anything but loopback, or decide a test's
verdict; it only records, tests judge.

Fault kind "rotate_broken" (issue 10): the provider REALLY rotates (the old
refresh token is consumed at once, with no Microsoft grace; Google rotates too,
which it normally does not) and then answers 200 with a body broken in the way
inject(..., breakage=NAME) names; current_refresh_token() is the live one:
    no_access_token             new refresh_token (and id_token), no access_token
    expires_in_1e400            "expires_in": 1e400 (beyond double: strict parsers refuse)
    int_beyond_2_63             "expires_in": 9223372036854775809 (2^63 + 1)
    duplicate_keys              decoy access_token and refresh_token first, the real
                                members last (the last wins, as Python's json reads it)
    bad_escape_elsewhere        an unrelated member "debug_note": "\\udc00" (lone surrogate)
    expires_in_string_garbage   "expires_in": "abc"

Endpoints:
    POST /google/token
    POST /github/login/oauth/access_token
    POST /microsoft/{tenant}/oauth2/v2.0/token
    GET  /_admin/summary, /_admin/accounts, /_admin/violations  (JSON, for standalone use)
"""

import argparse
import asyncio
import base64
import email.utils
import json
import random
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, asdict

from aiohttp import web

PROVIDERS = ("google", "github", "microsoft")

DEFAULT_CLIENTS = {
    "google": ("test-google-client", "test-google-secret"),
    "github": ("test-github-client", "test-github-secret"),
    "microsoft": ("test-microsoft-client", "test-microsoft-secret"),
}

# Faults that answer instead of the normal path and leave the account untouched
# unless consume=True; and faults that run a real refresh first, then damage the
# answer (the provider did rotate; the answer is still broken).
PRE_FAULTS = {
    "status", "http500", "http502", "http503", "429", "rate_limit", "stall", "reset",
    "not_json", "json_array", "huge_body", "invalid_grant", "bad_refresh_token",
    "invalid_client", "temporarily_unavailable", "error", "delay",
}
POST_FAULTS = {"missing_access_token", "missing_expires_in", "expires_in", "missing_refresh_token",
               "rotate_broken", "token_type"}
ALL_FAULTS = PRE_FAULTS | POST_FAULTS
# Rotate for real, then answer with a broken body (see the module docstring).
ROTATE_BREAKAGES = ("no_access_token", "expires_in_1e400", "int_beyond_2_63", "duplicate_keys",
                    "bad_escape_elsewhere", "expires_in_string_garbage")
ALL_FAULTS = ALL_FAULTS | {"rotate_broken"}


@dataclass
class RequestRecord:
    seq: int
    provider: str
    tenant: str = None
    account: str = None           # account key the presented refresh token belongs to
    refresh_token: str = None     # as presented
    known: bool = False           # the token was ever issued by this server
    stale: bool = False           # issued for the account, but no longer the current one
    client_id: str = None
    client_ok: bool = False
    client_auth: str = None       # "post" | "basic" | None
    grant_type: str = None
    scope: str = None             # as sent by the client
    accept: str = None
    user_agent: str = None
    content_type: str = None
    http_version: str = None
    start: float = 0.0            # time.monotonic()
    end: float = None             # None while in flight (or stalled forever)
    wall_start: float = 0.0       # time.time()
    status: int = None
    outcome: str = None           # "refreshed", "invalid_grant", "fault:429", ...
    fault: str = None
    overlapped: bool = False
    issued_access_token: str = None
    issued_refresh_token: str = None
    issued_id_token: str = None
    expires_in: object = None

    def to_dict(self):
        return asdict(self)


@dataclass
class Account:
    key: str
    provider: str
    scope: str = None
    current: str = None                            # the valid refresh token
    issued: list = field(default_factory=list)     # every refresh token ever issued, oldest first
    grace: dict = field(default_factory=dict)      # microsoft: old token -> monotonic deadline
    revoked: bool = False
    access_tokens: list = field(default_factory=list)
    refreshes: int = 0
    in_flight: list = field(default_factory=list)  # RequestRecords


class Fault:
    """One injected fault rule; see TokenServer.inject()."""

    def __init__(self, kind, provider=None, account=None, count=1, probability=None, **params):
        if kind not in ALL_FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(ALL_FAULTS)}")
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        self.kind = kind
        self.provider = provider
        self.account = account
        self.remaining = count  # None: unlimited
        self.probability = probability
        self.params = params
        self.hits = 0

    def consumes(self):
        return self.params.get("consume", self.kind in POST_FAULTS)

    def __repr__(self):
        return (f"Fault({self.kind!r}, provider={self.provider!r}, account={self.account!r}, "
                f"remaining={self.remaining!r}, hits={self.hits}, params={self.params!r})")


def _rand(n=32):
    return secrets.token_urlsafe(n)


def _fake_jwt(sub, aud):
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return ".".join([b64({"alg": "RS256", "typ": "JWT"}),
                     b64({"sub": sub, "aud": aud, "iat": now, "exp": now + 3600, "n": _rand(8)}),
                     _rand(32)])


class TokenServer:
    """State, recording and fault injection; all public methods are thread-safe."""

    def __init__(self, cert=None, key=None, host="127.0.0.1", port=0, clients=None,
                 microsoft_grace=300.0, delay_ms=0, seed=None):
        self.cert = cert
        self.key = key
        self.host = host
        self.port = port
        self.clients = dict(DEFAULT_CLIENTS)
        if clients:
            self.clients.update(clients)
        self.microsoft_grace = microsoft_grace
        self.delay_ms = delay_ms          # global answer delay (concurrency tests)
        self.expires_in_override = {}     # provider -> seconds
        self._lock = threading.RLock()
        self._accounts = {}               # key -> Account
        self._token_owner = {}            # refresh token -> account key
        self._requests = []
        self._violations = []
        self._faults = []
        self._seq = 0
        self._random = random.Random(seed)
        self._thread = None
        self._loop = None
        self._runner = None
        self._stopping = None             # asyncio.Event in the server loop
        self._gate = None                 # asyncio.Event: set = answering, clear = held
        # Crash tests: a request whose client hung up before the server acted on it is
        # not acted on (the provider never saw it complete), so killing a daemon while
        # its requests are held cannot burn a token. Real providers may act anyway; that
        # window is the daemon's unavoidable crash window, measured separately.
        self.skip_if_client_gone = False
        self._ready = threading.Event()
        self._start_error = None
        self._sock = None

    # ----- accounts -------------------------------------------------------------------

    def issue(self, provider, account_key, scope=None):
        """Registers (or re-authorizes) an account; returns its new valid refresh token.
        Re-issuing an existing account models re-consent: older tokens die, revoked is cleared."""
        return self.register(provider, account_key, self._new_refresh_token(provider), scope=scope)

    def register(self, provider, account_key, refresh_token, scope=None):
        """Like issue() with a refresh token chosen by the caller (seed files)."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        with self._lock:
            acct = self._accounts.get(account_key)
            if acct is None:
                acct = Account(key=account_key, provider=provider, scope=scope)
                self._accounts[account_key] = acct
            elif acct.provider != provider:
                raise ValueError(f"account {account_key!r} belongs to {acct.provider}, not {provider}")
            if scope is not None:
                acct.scope = scope
            acct.current = refresh_token
            acct.issued.append(refresh_token)
            acct.grace.clear()
            acct.revoked = False
            self._token_owner[refresh_token] = account_key
            return refresh_token

    def revoke(self, account_key):
        """The user revoked the grant: every token of the account is now invalid."""
        with self._lock:
            self._accounts[account_key].revoked = True

    def current_refresh_token(self, account_key):
        with self._lock:
            acct = self._accounts[account_key]
            return None if acct.revoked else acct.current

    def is_revoked(self, account_key):
        with self._lock:
            return self._accounts[account_key].revoked

    def issued_access_tokens(self, account_key):
        with self._lock:
            return list(self._accounts[account_key].access_tokens)

    def issued_refresh_tokens(self, account_key):
        with self._lock:
            return list(self._accounts[account_key].issued)

    def accounts(self):
        with self._lock:
            return list(self._accounts)

    def refresh_count(self, account_key):
        """Successful refreshes of this account."""
        with self._lock:
            return self._accounts[account_key].refreshes

    def set_expires_in(self, provider, seconds):
        """Every later success for provider answers with this expires_in (None: back to normal)."""
        with self._lock:
            if seconds is None:
                self.expires_in_override.pop(provider, None)
            else:
                self.expires_in_override[provider] = seconds

    # ----- recording --------------------------------------------------------------------

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def requests_for(self, account_key):
        with self._lock:
            return [r for r in self._requests if r.account == account_key]

    def successful_requests(self, account_key=None):
        with self._lock:
            return [r for r in self._requests if r.outcome == "refreshed"
                    and (account_key is None or r.account == account_key)]

    def violations(self):
        """Stale-token uses and overlapping request pairs for one account, as dicts."""
        with self._lock:
            return [dict(v) for v in self._violations]

    def in_flight(self):
        with self._lock:
            return sum(len(a.in_flight) for a in self._accounts.values()) + \
                sum(1 for r in self._requests if r.end is None and r.account is None)

    def clear_requests(self):
        with self._lock:
            self._requests.clear()
            self._violations.clear()

    def summary(self):
        with self._lock:
            outcomes = {}
            for r in self._requests:
                outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
            return {"requests": len(self._requests), "accounts": len(self._accounts),
                    "violations": len(self._violations), "outcomes": outcomes,
                    "in_flight": sum(1 for r in self._requests if r.end is None)}

    # ----- faults -------------------------------------------------------------------------

    def inject(self, kind, provider=None, account=None, count=1, probability=None, **params):
        """Adds a fault rule. provider/account None match any. count: how many answers it
        damages (None: unlimited); probability: chance per matching request.
        Params by kind: status(status=503, retry_after=None), 429/rate_limit(retry_after=2,
        retry_after_date=False), delay(ms), expires_in(value), huge_body(size=10 MiB),
        token_type(value): a real refresh answered with that token_type,
        error(status, error, description, error_codes), rotate_broken(breakage=one of
        ROTATE_BREAKAGES, see the module docstring), any kind: consume=bool (whether the
        provider really refreshed, i.e. rotated, before answering badly)."""
        if kind == "rotate_broken" and params.get("breakage") not in ROTATE_BREAKAGES:
            raise ValueError(f"rotate_broken needs breakage= one of {ROTATE_BREAKAGES}")
        f = Fault(kind, provider, account, count, probability, **params)
        with self._lock:
            self._faults.append(f)
        return f

    def hold(self):
        """Stops answering: requests wait (recorded as in flight) until release()."""
        self._loop.call_soon_threadsafe(self._gate.clear)

    def release(self):
        self._loop.call_soon_threadsafe(self._gate.set)

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, provider, account_key):
        for f in self._faults:
            if f.remaining is not None and f.remaining <= 0:
                continue
            if f.provider is not None and f.provider != provider:
                continue
            if f.account is not None and f.account != account_key:
                continue
            if f.probability is not None and self._random.random() >= f.probability:
                continue
            if f.remaining is not None:
                f.remaining -= 1
            f.hits += 1
            return f
        return None

    # ----- lifecycle ------------------------------------------------------------------------

    def start(self, timeout=10):
        """Runs the server on its own loop in a daemon thread; returns once it listens."""
        self._sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(1024)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._thread_main, name=f"tokenserver:{self.port}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("token server did not start in time")
        if self._start_error:
            raise self._start_error
        return self

    def stop(self):
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(15)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def token_url(self, provider, tenant="common"):
        """The token URL for a provider; microsoft keeps a literal {tenant} when tenant is None."""
        if provider == "google":
            return f"{self.base_url}/google/token"
        if provider == "github":
            return f"{self.base_url}/github/login/oauth/access_token"
        if provider == "microsoft":
            t = "{tenant}" if tenant is None else tenant
            return f"{self.base_url}/microsoft/{t}/oauth2/v2.0/token"
        raise ValueError(provider)

    def ssl_context(self):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def make_app(self):
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/google/token", self._google_cb)
        app.router.add_post("/github/login/oauth/access_token", self._github_cb)
        app.router.add_post("/microsoft/{tenant}/oauth2/v2.0/token", self._microsoft_cb)
        app.router.add_get("/_admin/summary", self._admin_summary_cb)
        app.router.add_get("/_admin/accounts", self._admin_accounts_cb)
        app.router.add_get("/_admin/violations", self._admin_violations_cb)
        return app

    async def serve(self, sock):
        """Serves on sock in the current loop until _shutdown()."""
        self._stopping = asyncio.Event()
        self._gate = asyncio.Event()
        self._gate.set()
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, ssl_context=self.ssl_context(), shutdown_timeout=0.2)
        await site.start()

    async def _shutdown(self):
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _thread_main(self):
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve(self._sock))
        except Exception as e:  # reported to start()
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    # ----- request handling ------------------------------------------------------------------

    async def _google_cb(self, request):
        return await self._handle(request, "google", None)

    async def _github_cb(self, request):
        return await self._handle(request, "github", None)

    async def _microsoft_cb(self, request):
        return await self._handle(request, "microsoft", request.match_info["tenant"])

    def _begin(self, provider, tenant, request, form):
        rt = form.get("refresh_token")
        client_id = form.get("client_id")
        client_secret = form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        client_auth = "post" if client_secret is not None else None
        if auth.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
                client_id = urllib.parse.unquote_plus(user)
                client_secret = urllib.parse.unquote_plus(pw)
                client_auth = "basic"
            except Exception:
                pass
        want_id, want_secret = self.clients[provider]
        with self._lock:
            self._seq += 1
            rec = RequestRecord(
                seq=self._seq, provider=provider, tenant=tenant, refresh_token=rt,
                client_id=client_id, client_ok=(client_id == want_id and client_secret == want_secret),
                client_auth=client_auth, grant_type=form.get("grant_type"), scope=form.get("scope"),
                accept=request.headers.get("Accept"), user_agent=request.headers.get("User-Agent"),
                content_type=request.headers.get("Content-Type"),
                http_version=f"{request.version.major}.{request.version.minor}",
                start=time.monotonic(), wall_start=time.time())
            key = self._token_owner.get(rt) if rt else None
            acct = self._accounts.get(key) if key else None
            if acct is not None and acct.provider == provider:
                rec.account = key
                rec.known = True
                rec.stale = rt != acct.current
                if rec.stale:
                    self._violations.append({"kind": "stale_token", "account": key,
                                             "seq": rec.seq, "provider": provider})
                for other in acct.in_flight:
                    rec.overlapped = other.overlapped = True
                    self._violations.append({"kind": "overlap", "account": key,
                                             "seqs": (other.seq, rec.seq), "provider": provider})
                acct.in_flight.append(rec)
            self._requests.append(rec)
            rec.fault_rule = self._pick_fault(provider, rec.account)
            return rec

    def _finish(self, rec, status, outcome):
        with self._lock:
            rec.end = time.monotonic()
            rec.status = status
            if rec.outcome is None:
                rec.outcome = outcome
            if rec.account is not None:
                acct = self._accounts[rec.account]
                if rec in acct.in_flight:
                    acct.in_flight.remove(rec)

    async def _handle(self, request, provider, tenant):
        try:
            form = await request.post()
        except Exception:
            form = {}
        rec = self._begin(provider, tenant, request, form)
        fault = rec.fault_rule
        status = None
        try:
            delay = self.delay_ms
            if fault is not None and fault.kind == "delay":
                delay += fault.params.get("ms", 1000)
            if delay:
                await asyncio.sleep(delay / 1000.0)
            if not self._gate.is_set():
                await self._gate.wait()
            if self.skip_if_client_gone and (request.transport is None
                                             or request.transport.is_closing()):
                rec.outcome = "client_gone"
                return web.Response(status=499)
            if fault is not None and fault.kind != "delay":
                rec.fault = fault.kind
                resp = await self._faulty_answer(request, provider, rec, form, fault)
            else:
                resp = self._answer(provider, rec, form, request)
            status = resp.status if resp is not None else None
            return resp
        finally:
            self._finish(rec, status, rec.outcome or "aborted")

    def _json(self, status, obj, headers=None):
        return web.Response(status=status, body=json.dumps(obj).encode(),
                            content_type="application/json", charset="utf-8", headers=headers)

    def _github_body(self, request, status, obj):
        """GitHub answers form-encoded unless asked for JSON."""
        if "application/json" in (request.headers.get("Accept") or ""):
            return self._json(status, obj)
        return web.Response(status=status, body=urllib.parse.urlencode(obj).encode(),
                            content_type="application/x-www-form-urlencoded")

    def _ms_error(self, status, error, code, text, headers=None):
        trace, corr = _uuid(), _uuid()
        ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        return self._json(status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                                 f"Correlation ID: {corr}\r\nTimestamp: {ts}",
            "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}"}, headers)

    def _error(self, request, provider, rec, kind):
        """The provider's own words for invalid_grant / invalid_client / bad request."""
        rec.outcome = kind
        if kind == "invalid_grant":
            if provider == "github":
                rec.outcome = "bad_refresh_token"
                return self._github_body(request, 200, {
                    "error": "bad_refresh_token",
                    "error_description": "The refresh token passed is incorrect or expired.",
                    "error_uri": "https://docs.github.com/apps/managing-oauth-apps/"
                                 "troubleshooting-oauth-app-access-token-request-errors"})
            if provider == "microsoft":
                return self._ms_error(400, "invalid_grant", 70008,
                                      "The provided authorization code or refresh token has "
                                      "expired due to inactivity.")
            return self._json(400, {"error": "invalid_grant",
                                    "error_description": "Token has been expired or revoked."})
        if kind == "invalid_client":
            if provider == "github":
                rec.outcome = "incorrect_client_credentials"
                return self._github_body(request, 200, {
                    "error": "incorrect_client_credentials",
                    "error_description": "The client_id and/or client_secret passed are incorrect."})
            if provider == "microsoft":
                return self._ms_error(401, "invalid_client", 7000215,
                                      "Invalid client secret provided.")
            return self._json(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        if kind == "invalid_request":
            if provider == "microsoft":
                return self._ms_error(400, "invalid_request", 90009,
                                      "Application is requesting a token for itself. This scenario "
                                      "is supported only if resource is specified using the "
                                      "GUID based App Identifier.")
            return self._json(400, {"error": "invalid_request",
                                    "error_description": "Missing required parameter: refresh_token"})
        if kind == "unsupported_grant_type":
            return self._json(400, {"error": "unsupported_grant_type",
                                    "error_description": "Invalid grant_type"})
        raise ValueError(kind)

    def _answer(self, provider, rec, form, request, consume_only=False):
        """The normal path: validate, refresh (rotating per dialect), answer."""
        if not rec.client_ok:
            return self._error(request, provider, rec, "invalid_client")
        if rec.grant_type != "refresh_token":
            return self._error(request, provider, rec, "unsupported_grant_type")
        if not rec.refresh_token:
            return self._error(request, provider, rec, "invalid_request")
        if provider == "microsoft" and "offline_access" not in (rec.scope or "").split():
            return self._error(request, provider, rec, "invalid_request")
        with self._lock:
            acct = self._accounts.get(rec.account) if rec.account else None
            valid = False
            if acct is not None and not acct.revoked:
                if rec.refresh_token == acct.current:
                    valid = True
                elif provider == "microsoft" and acct.grace.get(rec.refresh_token, 0) > time.monotonic():
                    valid = True
            if not valid:
                return self._error(request, provider, rec, "invalid_grant")
            body = self._refresh(provider, acct, rec)
        rec.outcome = "refreshed"
        if provider == "github":
            return self._github_body(request, 200, body)
        return self._json(200, body)

    def _refresh(self, provider, acct, rec):
        """Issues new tokens for acct (lock held); returns the success body."""
        acct.refreshes += 1
        body = {}
        if provider == "google":
            access = "ya29." + _rand(48)
            expires = self._random.randint(3599, 3920)
            body = {"access_token": access, "expires_in": expires,
                    "scope": acct.scope or "https://www.googleapis.com/auth/userinfo.email",
                    "token_type": "Bearer"}
            if "openid" in (acct.scope or "").split():
                body["id_token"] = rec.issued_id_token = _fake_jwt(acct.key, rec.client_id)
        elif provider == "github":
            access = "ghu_" + _rand(27)
            new_rt = "ghr_" + _rand(54)
            expires = 28800
            self._rotate(acct, new_rt, grace=0)
            body = {"access_token": access, "expires_in": expires, "refresh_token": new_rt,
                    "refresh_token_expires_in": 15811200, "scope": "", "token_type": "bearer"}
            rec.issued_refresh_token = new_rt
        else:
            access = "eyJ0eXAiOiJKV1Qi." + _rand(60)
            new_rt = "M.C5" + _rand(70)
            expires = self._random.randint(3600, 5400)
            self._rotate(acct, new_rt, grace=self.microsoft_grace)
            scopes = [s for s in (rec.scope or "").split() if s != "offline_access"]
            body = {"token_type": "Bearer", "scope": " ".join(scopes), "expires_in": expires,
                    "ext_expires_in": expires, "access_token": access, "refresh_token": new_rt}
            if "openid" in scopes:
                body["id_token"] = rec.issued_id_token = _fake_jwt(acct.key, rec.client_id)
            rec.issued_refresh_token = new_rt
        if provider in self.expires_in_override:
            expires = body["expires_in"] = self.expires_in_override[provider]
        acct.access_tokens.append(access)
        rec.issued_access_token = access
        rec.expires_in = expires
        return body

    def _rotate(self, acct, new_rt, grace):
        old = acct.current
        if old is not None and grace > 0:
            acct.grace[old] = time.monotonic() + grace
        acct.current = new_rt
        acct.issued.append(new_rt)
        self._token_owner[new_rt] = acct.key

    def _new_refresh_token(self, provider):
        return {"google": "1//0g", "github": "ghr_", "microsoft": "M.C5"}[provider] + _rand(48)

    async def _faulty_answer(self, request, provider, rec, form, fault):
        p = fault.params
        kind = fault.kind
        if kind == "rotate_broken":
            return self._rotate_broken(request, provider, rec, form, p["breakage"])
        if kind in POST_FAULTS:
            resp = self._answer(provider, rec, form, request)
            if rec.outcome != "refreshed":
                return resp  # the request itself was bad: no body to damage
            body = json.loads(resp.body) if resp.content_type == "application/json" else \
                dict(urllib.parse.parse_qsl(resp.body.decode()))
            if kind == "missing_access_token":
                body.pop("access_token", None)
            elif kind == "missing_expires_in":
                body.pop("expires_in", None)
            elif kind == "missing_refresh_token":
                body.pop("refresh_token", None)
            elif kind == "expires_in":
                body["expires_in"] = p.get("value", 0)
            elif kind == "token_type":
                body["token_type"] = p.get("value", "Bearer")
            rec.outcome = "fault:" + kind
            return self._json(resp.status, body)
        if fault.consumes():
            # The provider did the refresh (rotation included); the client never learns it.
            self._answer(provider, rec, form, request)
        rec.outcome = "fault:" + kind
        if kind in ("status", "http500", "http502", "http503"):
            status = p.get("status", int(kind[4:]) if kind.startswith("http") else 503)
            headers = {}
            if p.get("retry_after") is not None:
                headers["Retry-After"] = _retry_after(p["retry_after"], p.get("retry_after_date"))
            body = p.get("body", "<html><body>Server Error</body></html>")
            return web.Response(status=status, text=body, content_type="text/html", headers=headers)
        if kind in ("429", "rate_limit"):
            headers = {"Retry-After": _retry_after(p.get("retry_after", 2), p.get("retry_after_date"))}
            if provider == "microsoft":
                return self._ms_error(429, "temporarily_unavailable", 90055,
                                      "Too many requests. Please try again later.", headers)
            return self._json(429, {"error": "rate_limit_exceeded",
                                    "error_description": "Too many requests"}, headers)
        if kind == "temporarily_unavailable":
            if provider == "microsoft":
                return self._ms_error(p.get("status", 503), "temporarily_unavailable", 90055,
                                      "The service is temporarily unavailable.")
            return self._json(p.get("status", 503), {"error": "temporarily_unavailable"})
        if kind == "stall":
            # Never answer; the request ends when the client gives up (closes) or we stop.
            while not self._stopping.is_set():
                t = request.transport
                if t is None or t.is_closing():
                    break
                try:
                    await asyncio.wait_for(self._stopping.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
            rec.outcome = "fault:stall(client gave up)" if not self._stopping.is_set() \
                else "fault:stall"
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        if kind == "reset":
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/json"
            resp.content_length = 1000
            await resp.prepare(request)
            await resp.write(b'{"access_token": "ya29.trunc')
            await asyncio.sleep(0.05)
            _reset_connection(request)
            return resp
        if kind == "not_json":
            return web.Response(status=200, text="<html>Sign in to continue</html>",
                                content_type="text/html")
        if kind == "json_array":
            return self._json(200, [{"access_token": "ya29.x", "expires_in": 3600}])
        if kind == "huge_body":
            size = p.get("size", 10 * 1024 * 1024)
            filler = b"a" * size
            body = b'{"access_token": "' + filler + b'", "expires_in": 3600, "token_type": "Bearer"}'
            return web.Response(status=200, body=body, content_type="application/json")
        if kind in ("invalid_grant", "bad_refresh_token"):
            return self._error(request, provider, rec, "invalid_grant")
        if kind == "invalid_client":
            return self._error(request, provider, rec, "invalid_client")
        if kind == "error":
            obj = {"error": p.get("error", "server_error"),
                   "error_description": p.get("description", "injected error")}
            if "error_codes" in p:
                obj["error_codes"] = p["error_codes"]
            rec.outcome = "fault:error:" + obj["error"]
            return self._json(p.get("status", 400), obj)
        raise ValueError(kind)

    def _rotate_broken(self, request, provider, rec, form, breakage):
        """A real rotation answered with a body broken as breakage says (issue 10)."""
        resp = self._answer(provider, rec, form, request)
        if rec.outcome != "refreshed":
            return resp  # the request itself was bad: nothing rotated
        body = json.loads(resp.body) if resp.content_type == "application/json" else \
            dict(urllib.parse.parse_qsl(resp.body.decode(), keep_blank_values=True))
        with self._lock:
            acct = self._accounts[rec.account]
            if "refresh_token" not in body:  # Google: rotate now, as this fault promises
                new_rt = self._new_refresh_token(provider)
                self._rotate(acct, new_rt, grace=0)
                rec.issued_refresh_token = body["refresh_token"] = new_rt
            acct.grace.clear()  # the old token is consumed at once
        rec.outcome = "fault:rotate_broken:" + breakage
        sentinel = "__rotate_broken_value__"
        raw = None
        if breakage == "no_access_token":
            body.pop("access_token", None)
        elif breakage == "expires_in_1e400":
            body["expires_in"], raw = sentinel, "1e400"
        elif breakage == "int_beyond_2_63":
            body["expires_in"] = 2 ** 63 + 1
        elif breakage == "expires_in_string_garbage":
            body["expires_in"] = "abc"
        text = json.dumps(body)
        if raw is not None:
            text = text.replace(json.dumps(sentinel), raw)
        if breakage == "duplicate_keys":
            decoys = {"access_token": "decoy-" + _rand(16), "refresh_token": "decoy-" + _rand(24)}
            text = json.dumps(decoys)[:-1] + ", " + text[1:]
        elif breakage == "bad_escape_elsewhere":
            text = '{"debug_note": "\\udc00", ' + text[1:]
        rec.expires_in = body.get("expires_in") if raw is None else raw
        return web.Response(status=200, body=text.encode(), content_type="application/json")

    # ----- admin (standalone use) ---------------------------------------------------------------

    async def _admin_summary_cb(self, request):
        return self._json(200, self.summary())

    async def _admin_accounts_cb(self, request):
        with self._lock:
            out = {k: {"provider": a.provider, "current_refresh_token": a.current,
                       "revoked": a.revoked, "refreshes": a.refreshes}
                   for k, a in self._accounts.items()}
        return self._json(200, out)

    async def _admin_violations_cb(self, request):
        return self._json(200, self.violations())


def _uuid():
    import uuid
    return str(uuid.uuid4())


def _retry_after(seconds, as_date):
    if as_date:
        return email.utils.formatdate(time.time() + float(seconds), usegmt=True)
    return str(int(seconds))


def _reset_connection(request):
    """Ends the connection with a TCP RST mid-body."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            import struct
            raw = socket.socket(fileno=sock.fileno())
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                raw.detach()
        except OSError:
            pass
    transport.abort()


def load_seed_file(server, path):
    """Seed file: {"clients": {provider: [id, secret]}, "accounts": [{"provider", "account",
    "refresh_token", "scope"?, "revoked"?}]}."""
    with open(path) as f:
        seed = json.load(f)
    for provider, (cid, secret) in (seed.get("clients") or {}).items():
        server.clients[provider] = (cid, secret)
    for a in seed.get("accounts", []):
        server.register(a["provider"], a["account"], a["refresh_token"], scope=a.get("scope"))
        if a.get("revoked"):
            server.revoke(a["account"])
    return len(seed.get("accounts", []))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--delay-ms", type=int, default=0, help="delay every answer")
    ap.add_argument("--seed-file", help="JSON accounts and client credentials to preload")
    ap.add_argument("--microsoft-grace", type=float, default=300.0)
    ap.add_argument("--quiet", action="store_true", help="do not log each request")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("the test token server listens on loopback only")

    server = TokenServer(cert=args.cert, key=args.key, host=args.host, port=args.port,
                         microsoft_grace=args.microsoft_grace, delay_ms=args.delay_ms)
    if args.seed_file:
        n = load_seed_file(server, args.seed_file)
        print(f"tokenserver: loaded {n} accounts from {args.seed_file}", flush=True)

    async def run():
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(1024)
        await server.serve(sock)
        print(f"tokenserver: listening on {server.base_url} "
              f"(google, github, microsoft)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        seen = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            if not args.quiet:
                reqs = server.requests
                for r in reqs[seen:]:
                    if r.end is None:
                        break
                    seen += 1
                    print(f"tokenserver: {r.provider:9s} account={r.account} -> {r.status} "
                          f"{r.outcome}", flush=True)
        await server._shutdown()
        print(f"tokenserver: stopped; {json.dumps(server.summary())}", flush=True)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
