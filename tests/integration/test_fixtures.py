"""Proves the fixtures the integration suite stands on: the throwaway PostgreSQL
cluster, the loopback HTTPS token server and its three dialects, fault injection
and recording, and Fernet seeding. Nothing here needs the daemon."""

import json
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg
import pytest
from cryptography.fernet import Fernet, InvalidToken

from lib.daemon import DaemonEnv, render_ini
from lib.listen import NotifyListener
from lib.seed import FernetKeys

CLIENTS = {
    "google": ("test-google-client", "test-google-secret"),
    "github": ("test-github-client", "test-github-secret"),
    "microsoft": ("test-microsoft-client", "test-microsoft-secret"),
}


def post(server, provider, ca_file, refresh_token, client=None, scope=None, accept_json=True,
         tenant="common", timeout=10, extra=None):
    """One refresh request the way a client would send it; returns (status, headers, body)."""
    cid, secret = client or CLIENTS[provider]
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": cid, "client_secret": secret}
    if scope is not None:
        form["scope"] = scope
    form.update(extra or {})
    req = urllib.request.Request(server.token_url(provider, tenant=tenant),
                                 data=urllib.parse.urlencode(form).encode(), method="POST")
    if accept_json:
        req.add_header("Accept", "application/json")
    ctx = ssl.create_default_context(cafile=ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(*args, **kw):
    status, headers, body = post(*args, **kw)
    return status, headers, json.loads(body)


# ----- PostgreSQL -----------------------------------------------------------------------------

def test_cluster_runs_as_unprivileged_user_on_loopback(pg_cluster):
    assert pg_cluster.running
    with pg_cluster.connect() as c:
        version = c.execute("SHOW server_version_num").fetchone()[0]
        listen = c.execute("SHOW listen_addresses").fetchone()[0]
        fsync = c.execute("SHOW fsync").fetchone()[0]
    assert version.startswith("15"), f"expected PostgreSQL 15, saw {version}"
    assert listen == "127.0.0.1", f"expected listen_addresses 127.0.0.1, saw {listen}"
    assert fsync == "off"
    if os.geteuid() == 0:
        st = os.stat(pg_cluster.data_dir)
        assert st.st_uid != 0, "expected the data directory to belong to an unprivileged user"


def test_schema_is_loaded_in_each_test_database(db):
    tables = {r[0] for r in db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    for t in ("users", "oauth_accounts", "user_profiles", "django_session"):
        assert t in tables, f"expected table {t}, saw {sorted(tables)}"
    idx = db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_oauth_accounts_expires_at'")
    assert idx == 1


def test_test_databases_are_isolated(pg_cluster, db):
    other = pg_cluster.create_database()
    try:
        db.execute("INSERT INTO users (username, email, password_hash, first_name, last_name, "
                   "date_joined) VALUES ('a', 'a@x', 'x', 'a', 'b', now())")
        assert db.scalar("SELECT count(*) FROM users") == 1
        assert other.scalar("SELECT count(*) FROM users") == 0, "expected a fresh database to be empty"
        assert other.name != db.name
    finally:
        other.drop()


def test_dsn_is_a_libpq_uri_psycopg_accepts(db):
    assert db.dsn.startswith("postgresql://")
    with psycopg.connect(db.dsn) as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == db.name


def test_restart_keeps_port_and_data(pg_cluster, db):
    port = pg_cluster.port
    db.execute("CREATE TABLE survives (x int)")
    db.execute("INSERT INTO survives VALUES (42)")
    conn = db.conn()
    pg_cluster.restart(mode="immediate")
    assert pg_cluster.port == port
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    assert db.scalar("SELECT x FROM survives") == 42, "expected data to survive a crash restart"


def test_stop_then_start_refuses_then_accepts_connections(pg_cluster, db):
    pg_cluster.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(db.dsn, connect_timeout=2)
    pg_cluster.start()
    assert db.scalar("SELECT 1") == 1


def test_terminate_backends_spares_fixture_connections(pg_cluster, db):
    victim = psycopg.connect(db.dsn, autocommit=True, application_name="oauth-refreshd")
    mine = db.conn()
    n = pg_cluster.terminate_backends(db.name)
    assert n == 1, f"expected to terminate 1 backend, terminated {n}"
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    assert mine.execute("SELECT 1").fetchone()[0] == 1
    victim.close()


def test_listener_collects_notify_payloads(db):
    lst = NotifyListener(db.dsn, "oauth_refresh_event").start()
    try:
        for i in range(3):
            db.execute("SELECT pg_notify('oauth_refresh_event', %s)",
                       (json.dumps({"event": "refreshed", "account_id": i}),))
        got = lst.wait_for(lambda e: e.get("event") == "refreshed", count=3, timeout=10)
        assert [e["account_id"] for e in got] == [0, 1, 2]
    finally:
        lst.stop()


# ----- Seeding ---------------------------------------------------------------------------------

def test_keys_file_is_private_and_parsable(tmp_path):
    keys = FernetKeys([Fernet.generate_key(), Fernet.generate_key()])
    path = keys.write(str(tmp_path / "k"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    lines = [l for l in open(path).read().splitlines() if l and not l.startswith("#")]
    assert [l.encode() for l in lines] == keys.keys


def test_seeded_tokens_decrypt_with_python_fernet(seeder, fernet_keys, token_server):
    acct = seeder.add_account("github", expires_in=-30, id_token="idt")
    row = seeder.row(acct.id)
    f = Fernet(fernet_keys.primary)
    assert f.decrypt(row["refresh_token"].encode()).decode() == acct.refresh_token
    assert f.decrypt(row["access_token"].encode()).decode() == acct.access_token
    assert f.decrypt(row["id_token"].encode()).decode() == "idt"
    assert row["provider_account_id"] == acct.account_key
    assert acct.refresh_token == token_server.current_refresh_token(acct.account_key)
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(row["refresh_token"].encode())


def test_seeded_null_refresh_token_and_expiry(seeder):
    acct = seeder.add_account("github", refresh_token=None, expires_in=None)
    row = seeder.row(acct.id)
    assert row["refresh_token"] is None and row["expires_at"] is None


def test_bulk_seeding_makes_distinct_due_accounts(seeder, token_server):
    accts = seeder.add_accounts(300, "microsoft", expires_in=-10)
    assert len({a.id for a in accts}) == 300
    assert seeder.db.scalar("SELECT count(*) FROM oauth_accounts WHERE expires_at < now()") == 300
    sample = seeder.read(accts[123].id)
    assert sample["refresh_token"] == token_server.current_refresh_token(accts[123].account_key)


# ----- Token server: dialects --------------------------------------------------------------------

def test_google_refresh_does_not_rotate(token_server, pki):
    rt = token_server.issue("google", "g1", scope="openid email")
    for _ in range(2):
        status, _, body = post_json(token_server, "google", pki.ca_file, rt)
        assert status == 200, body
        assert "refresh_token" not in body
        assert 3599 <= body["expires_in"] <= 3920
        assert body["token_type"] == "Bearer" and body["access_token"].startswith("ya29.")
        assert "id_token" in body, "expected an id_token when openid was granted"
    assert token_server.current_refresh_token("g1") == rt
    assert len(token_server.issued_access_tokens("g1")) == 2
    assert token_server.violations() == []


def test_github_rotation_kills_the_old_token_with_http_200(token_server, pki):
    rt = token_server.issue("github", "gh1")
    status, _, body = post_json(token_server, "github", pki.ca_file, rt)
    assert status == 200 and body["refresh_token"].startswith("ghr_"), body
    assert body["expires_in"] == 28800 and body["refresh_token_expires_in"] == 15811200
    assert token_server.current_refresh_token("gh1") == body["refresh_token"]
    status, _, again = post_json(token_server, "github", pki.ca_file, rt)
    assert status == 200, "GitHub answers errors with HTTP 200"
    assert again["error"] == "bad_refresh_token", again
    v = token_server.violations()
    assert [x["kind"] for x in v] == ["stale_token"], v
    assert token_server.requests_for("gh1")[1].stale


def test_github_answers_form_encoded_without_accept_json(token_server, pki):
    rt = token_server.issue("github", "gh2")
    status, headers, body = post(token_server, "github", pki.ca_file, rt, accept_json=False)
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert "access_token" in urllib.parse.parse_qs(body.decode())


def test_github_wrong_secret_is_incorrect_client_credentials_200(token_server, pki):
    rt = token_server.issue("github", "gh3")
    status, _, body = post_json(token_server, "github", pki.ca_file, rt,
                                client=("test-github-client", "wrong"))
    assert status == 200 and body["error"] == "incorrect_client_credentials", body
    assert token_server.current_refresh_token("gh3") == rt, "a rejected request must not rotate"


def test_microsoft_requires_offline_access_and_rotates(token_server, pki):
    rt = token_server.issue("microsoft", "ms1", scope="openid User.Read")
    status, _, body = post_json(token_server, "microsoft", pki.ca_file, rt, scope="openid User.Read")
    assert status == 400 and body["error"] == "invalid_request", body
    assert body["error_codes"] == [90009] and body["error_description"].startswith("AADSTS90009")
    status, _, body = post_json(token_server, "microsoft", pki.ca_file, rt,
                                scope="openid User.Read offline_access", tenant="contoso")
    assert status == 200, body
    assert body["scope"] == "openid User.Read", "scope comes back without offline_access"
    assert body["refresh_token"] != rt and "id_token" in body
    assert 3600 <= body["expires_in"] <= 5400
    assert token_server.requests_for("ms1")[-1].tenant == "contoso"


def test_microsoft_old_token_works_within_grace_but_is_recorded(token_server_factory, pki):
    server = token_server_factory(microsoft_grace=0.3)
    rt = server.issue("microsoft", "ms2")
    s1, _, b1 = post_json(server, "microsoft", pki.ca_file, rt, scope="offline_access")
    assert s1 == 200
    s2, _, b2 = post_json(server, "microsoft", pki.ca_file, rt, scope="offline_access")
    assert s2 == 200, "the previous token is still valid within the grace"
    assert [v["kind"] for v in server.violations()] == ["stale_token"]
    time.sleep(0.4)
    s3, _, b3 = post_json(server, "microsoft", pki.ca_file, b1["refresh_token"], scope="offline_access")
    assert s3 == 400 and b3["error"] == "invalid_grant" and b3["error_codes"] == [70008], b3
    for k in ("trace_id", "correlation_id", "timestamp"):
        assert k in b3


def test_wrong_client_secret_is_invalid_client_401(token_server, pki):
    for provider in ("google", "microsoft"):
        rt = token_server.issue(provider, f"{provider}-ic")
        status, _, body = post_json(token_server, provider, pki.ca_file, rt,
                                    client=(CLIENTS[provider][0], "nope"), scope="offline_access")
        assert (status, body["error"]) == (401, "invalid_client"), (provider, status, body)


def test_http_basic_client_auth_is_accepted(token_server, pki):
    import base64
    rt = token_server.issue("google", "basic1")
    form = {"grant_type": "refresh_token", "refresh_token": rt}
    req = urllib.request.Request(token_server.token_url("google"),
                                 data=urllib.parse.urlencode(form).encode(), method="POST")
    req.add_header("Authorization", "Basic " + base64.b64encode(
        b"test-google-client:test-google-secret").decode())
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=pki.ca_file)) as r:
        assert r.status == 200
    assert token_server.requests[-1].client_auth == "basic"


def test_unknown_and_revoked_tokens_are_invalid_grant(token_server, pki):
    status, _, body = post_json(token_server, "google", pki.ca_file, "never-issued")
    assert (status, body["error"]) == (400, "invalid_grant")
    assert token_server.requests[-1].account is None and not token_server.requests[-1].known
    rt = token_server.issue("github", "rev1")
    token_server.revoke("rev1")
    status, _, body = post_json(token_server, "github", pki.ca_file, rt)
    assert (status, body["error"]) == (200, "bad_refresh_token")
    assert token_server.current_refresh_token("rev1") is None
    new = token_server.issue("github", "rev1")  # the user re-authorizes
    assert post_json(token_server, "github", pki.ca_file, new)[0] == 200


def test_records_client_id_scope_and_times(token_server, pki):
    rt = token_server.issue("microsoft", "rec1")
    post(token_server, "microsoft", pki.ca_file, rt, scope="User.Read offline_access")
    (r,) = token_server.requests_for("rec1")
    assert r.client_id == "test-microsoft-client" and r.client_ok
    assert r.scope == "User.Read offline_access" and r.grant_type == "refresh_token"
    assert r.end is not None and r.end >= r.start
    assert r.issued_refresh_token == token_server.current_refresh_token("rec1")
    assert r.issued_access_token == token_server.issued_access_tokens("rec1")[0]


def test_overlapping_requests_for_one_account_are_recorded(token_server, pki):
    token_server.delay_ms = 300
    rt = token_server.issue("google", "ov1")
    other = token_server.issue("google", "ov2")
    threads = [threading.Thread(target=post, args=(token_server, "google", pki.ca_file, t))
               for t in (rt, rt, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = token_server.violations()
    assert [(x["kind"], x["account"]) for x in v] == [("overlap", "ov1")], v
    assert all(r.overlapped for r in token_server.requests_for("ov1"))
    assert not token_server.requests_for("ov2")[0].overlapped


def test_sequential_requests_are_not_overlaps(token_server, pki):
    rt = token_server.issue("google", "seq1")
    for _ in range(5):
        post(token_server, "google", pki.ca_file, rt)
    assert token_server.violations() == []


# ----- Token server: faults --------------------------------------------------------------------

def test_fault_429_with_retry_after_seconds_and_date(token_server, pki):
    rt = token_server.issue("google", "f429")
    token_server.inject("429", provider="google", count=1, retry_after=7)
    token_server.inject("429", provider="google", count=1, retry_after=30, retry_after_date=True)
    s, h, _ = post(token_server, "google", pki.ca_file, rt)
    assert (s, h["Retry-After"]) == (429, "7")
    s, h, _ = post(token_server, "google", pki.ca_file, rt)
    assert s == 429 and h["Retry-After"].endswith("GMT"), h
    s, _, _ = post(token_server, "google", pki.ca_file, rt)
    assert s == 200, "faults with a count stop after that many answers"


@pytest.mark.parametrize("kind,status", [("http500", 500), ("http502", 502), ("http503", 503)])
def test_fault_5xx(token_server, pki, kind, status):
    rt = token_server.issue("github", "f5xx")
    token_server.inject(kind, provider="github")
    assert post(token_server, "github", pki.ca_file, rt)[0] == status
    assert token_server.current_refresh_token("f5xx") == rt, "a 5xx must not rotate by default"


def test_fault_is_scoped_to_provider_and_account(token_server, pki):
    a = token_server.issue("google", "scopeA")
    b = token_server.issue("google", "scopeB")
    token_server.inject("http503", provider="google", account="scopeA", count=None)
    assert post(token_server, "google", pki.ca_file, b)[0] == 200
    assert post(token_server, "google", pki.ca_file, a)[0] == 503
    assert post(token_server, "google", pki.ca_file, a)[0] == 503
    token_server.clear_faults()
    assert post(token_server, "google", pki.ca_file, a)[0] == 200


def test_fault_probability(token_server_factory, pki):
    server = token_server_factory(seed=1)
    rt = server.issue("google", "prob")
    server.inject("http500", provider="google", count=None, probability=0.5)
    statuses = [post(server, "google", pki.ca_file, rt)[0] for _ in range(40)]
    assert 5 < statuses.count(500) < 35, statuses


@pytest.mark.parametrize("kind,check", [
    ("not_json", lambda b: b.startswith(b"<html>")),
    ("json_array", lambda b: isinstance(json.loads(b), list)),
    ("missing_access_token", lambda b: "access_token" not in json.loads(b)),
    ("missing_expires_in", lambda b: "expires_in" not in json.loads(b)),
])
def test_fault_bad_bodies(token_server, pki, kind, check):
    rt = token_server.issue("google", "bad-" + kind)
    token_server.inject(kind)
    status, _, body = post(token_server, "google", pki.ca_file, rt)
    assert status == 200 and check(body), body[:200]


@pytest.mark.parametrize("value", [0, -5, 10**12, "abc"])
def test_fault_expires_in_values_still_rotate(token_server, pki, value):
    rt = token_server.issue("github", "exp")
    token_server.inject("expires_in", provider="github", value=value)
    status, _, body = post_json(token_server, "github", pki.ca_file, rt)
    assert body["expires_in"] == value
    assert body["refresh_token"] == token_server.current_refresh_token("exp"), \
        "a damaged answer still carries the rotated refresh token"


def test_fault_huge_body(token_server, pki):
    rt = token_server.issue("google", "huge")
    token_server.inject("huge_body")
    status, _, body = post(token_server, "google", pki.ca_file, rt, timeout=30)
    assert len(body) >= 10 * 1024 * 1024


def test_fault_reset_mid_body(token_server, pki):
    rt = token_server.issue("google", "reset")
    token_server.inject("reset")
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError, Exception)) as ei:
        s, h, body = post(token_server, "google", pki.ca_file, rt)
        raise AssertionError(f"expected a broken response, got {s} {body!r}")
    assert not isinstance(ei.value, AssertionError), ei.value


def test_fault_stall_never_answers(token_server, pki):
    rt = token_server.issue("google", "stall")
    token_server.inject("stall")
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        post(token_server, "google", pki.ca_file, rt, timeout=1)
    assert post(token_server, "google", pki.ca_file, rt)[0] == 200


def test_fault_delay(token_server, pki):
    rt = token_server.issue("google", "delay")
    token_server.inject("delay", ms=400)
    t0 = time.monotonic()
    assert post(token_server, "google", pki.ca_file, rt)[0] == 200
    assert time.monotonic() - t0 >= 0.4


def test_fault_invalid_grant_and_client_per_dialect(token_server, pki):
    rt = token_server.issue("github", "ig")
    token_server.inject("invalid_grant", provider="github")
    assert post_json(token_server, "github", pki.ca_file, rt)[2]["error"] == "bad_refresh_token"
    token_server.inject("invalid_client", provider="microsoft")
    mrt = token_server.issue("microsoft", "ic")
    s, _, b = post_json(token_server, "microsoft", pki.ca_file, mrt, scope="offline_access")
    assert (s, b["error"], b["error_codes"]) == (401, "invalid_client", [7000215])


def test_consuming_fault_burns_the_account(token_server, pki):
    rt = token_server.issue("github", "burn")
    token_server.inject("http502", provider="github", consume=True)
    assert post(token_server, "github", pki.ca_file, rt)[0] == 502
    assert token_server.current_refresh_token("burn") != rt, "the provider rotated before failing"


# ----- TLS --------------------------------------------------------------------------------------

def test_server_certificate_verifies_only_against_the_test_ca(token_server_factory, pki):
    good = token_server_factory()
    bad = token_server_factory(cert=pki.other_cert_file, key=pki.other_key_file)
    rt = good.issue("google", "tls")
    assert post(good, "google", pki.ca_file, rt)[0] == 200
    with pytest.raises(urllib.error.URLError) as ei:
        post(bad, "google", pki.ca_file, rt)
    assert isinstance(ei.value.reason, ssl.SSLCertVerificationError)
    with pytest.raises(urllib.error.URLError):
        post(good, "google", pki.other_ca_file, rt)


# ----- Daemon env (no daemon needed) --------------------------------------------------------------

def test_daemon_env_writes_a_complete_config(tmp_path, db, fernet_keys, token_server, pki):
    env = DaemonEnv(str(tmp_path), db.dsn, fernet_keys, token_server=token_server,
                    ca_file=pki.ca_file)
    text = env.config_text()
    for needle in ("[daemon]", "[database]", f"conninfo = {db.dsn}", "[crypto]", "[http]",
                   f"ca_file = {pki.ca_file}", "[provider.google]", "[provider.github]",
                   "[provider.microsoft]", "/microsoft/{tenant}/oauth2/v2.0/token"):
        assert needle in text, f"expected {needle!r} in config:\n{text}"
    assert "test-google-secret" not in text, "secrets belong in *_file files"
    assert open(tmp_path / "google.secret").read().strip() == "test-google-secret"
    assert os.stat(env.keys_file).st_mode & 0o777 == 0o600
    env.write_config({"provider.github": None, "refresh": {"lead_time": "1h"}})
    text = env.config_text()
    assert "[provider.github]" not in text and "lead_time = 1h" in text


def test_render_ini_omits_none():
    assert render_ini({"a": {"x": 1, "y": None, "z": True}, "b": None}) == "[a]\nx = 1\nz = yes\n"


def test_standalone_token_server_serves_seed_file(tmp_path, pki, oauth_source_dir):
    import subprocess
    import sys
    from lib.pgcluster import free_port
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"accounts": [
        {"provider": "github", "account": "s1", "refresh_token": "ghr_seeded"}]}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(oauth_source_dir, "tests", "tokenserver",
                                                          "tokenserver.py"),
                             "--port", str(port), "--cert", pki.cert_file, "--key", pki.key_file,
                             "--seed-file", str(seed), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "listening" not in line:
            line = proc.stdout.readline()
            assert line, "standalone token server exited before listening"

        class Addr:
            def token_url(self, provider, tenant="common"):
                return f"https://127.0.0.1:{port}/github/login/oauth/access_token"
        s, _, body = post_json(Addr(), "github", pki.ca_file, "ghr_seeded")
        assert s == 200 and body["refresh_token"].startswith("ghr_"), body
        ctx = ssl.create_default_context(cafile=pki.ca_file)
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/_admin/summary", context=ctx) as r:
            assert json.loads(r.read())["outcomes"] == {"refreshed": 1}
    finally:
        proc.terminate()
        proc.wait(10)


def test_daemon_runner_captures_logs_signals_and_wrapper(tmp_path, monkeypatch, db, fernet_keys,
                                                         token_server, pki):
    """The runner itself, proven with a stand-in binary (the real daemon is tested elsewhere)."""
    import signal as sig
    fake_build = tmp_path / "build"
    fake_build.mkdir()
    stub = fake_build / "oauth-refreshd"
    stub.write_text("#!/bin/bash\n"
                    "echo \"args: $*\" >&2\n"
                    "for a; do [ \"$a\" = --once ] && exit 3; done\n"
                    "trap 'echo got TERM; exit 0' TERM\n"
                    "echo ready\n"
                    "while :; do sleep 0.05; done\n")
    stub.chmod(0o755)
    monkeypatch.setenv("OAUTH_BUILD_DIR", str(fake_build))
    os.makedirs(tmp_path / "env")
    env = DaemonEnv(str(tmp_path / "env"), db.dsn, fernet_keys, token_server=token_server,
                    ca_file=pki.ca_file)
    rc, log = env.run_once(timeout=10)
    assert rc == 3 and f"args: -c {env.config_path} --once" in log, (rc, log)

    d = env.daemon().start()
    d.wait_for_log(r"^ready$|\nready\n", timeout=10)
    assert d.running()
    d.send_signal(sig.SIGTERM)
    assert d.wait(10) == 0 and "got TERM" in d.log()

    monkeypatch.setenv("OAUTH_TEST_WRAPPER", "env OAUTH_WRAPPED=1")
    assert env.daemon().argv(["--once"])[:2] == ["env", "OAUTH_WRAPPED=1"]
    rc, _ = env.run_once(timeout=10)
    assert rc == 3
    d = env.daemon().start()
    env.cleanup()
    assert not d.running(), "cleanup must kill every daemon it started"
