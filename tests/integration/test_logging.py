"""Logging (SPEC §7; issue 4 "Logging"): journald's native protocol when JOURNAL_STREAM
names stderr, with PRIORITY, a MESSAGE_ID per key event and OAUTH_* fields; readable lines
on stderr otherwise; log_level respected, per-account success at debug, a periodic summary
at info; and never a token, secret, key or password in any log line or STATUS=."""

import base64
import json
import os
import re
import signal

import pytest

from lib.daemon import source_dir, wait_until
from lib.sdnotify_socket import FakeJournal, NotifySocket, notify_daemon


def message_ids():
    """MSGID_NAME -> id, from include/log.h (the single source)."""
    with open(os.path.join(source_dir(), "include", "log.h")) as f:
        return dict(re.findall(r'#define MSGID_(\w+)\s+"([0-9a-f]{32})"', f.read()))


def continuous(env, overrides=None, extra_env=None, name="continuous", wrap=None):
    if overrides:
        env.write_config(overrides)
    d = notify_daemon(env, None, extra_env=extra_env, name=name, wrap=wrap)
    return d


def test_message_ids_are_documented_and_unique():
    ids = message_ids()
    assert len(ids) >= 11, ids
    assert len(set(ids.values())) == len(ids), f"duplicate MESSAGE_IDs: {ids}"
    for name, mid in ids.items():
        assert mid[12] == "4" and mid[16] in "89ab", (
            f"MSGID_{name} {mid} is not a random (v4) id128 as systemd-id128 new makes")
    with open(os.path.join(source_dir(), "docs", "journal-message-ids.md")) as f:
        doc = f.read()
    for name, mid in ids.items():
        assert re.search(rf"\b{mid}\b", doc), f"MSGID_{name} ({mid}) missing from the docs"
    documented = set(re.findall(r"\b[0-9a-f]{32}\b", doc))
    assert documented <= set(ids.values()), f"docs list unknown ids: {documented - set(ids.values())}"


@pytest.fixture
def journal(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the fake journald needs a private mount namespace (root)")
    j = FakeJournal(str(tmp_path))
    yield j
    j.close()


def journal_daemon(env, journal, overrides=None, extra_env=None, match=True):
    """A daemon whose stderr is its log file and whose JOURNAL_STREAM names that file
    (match=True) or something else; sd_journal_sendv() reaches `journal`."""
    if overrides:
        env.write_config(overrides)
    d = notify_daemon(env, None, name="journal", wrap=journal.wrap_argv)
    open(d.log_path, "ab").close()  # the inode stderr will have
    st = os.stat(d.log_path)
    stream = f"{st.st_dev}:{st.st_ino}" if match else f"{st.st_dev}:{st.st_ino + 1}"
    d.env = dict(d.env or {}, JOURNAL_STREAM=stream, **(extra_env or {}))
    return d


def test_native_journal_records_carry_message_ids_and_oauth_fields_for_every_key_event(
        migrated_env, seeder, token_server, journal, events, pg_cluster, db):
    ids = message_ids()
    ok = seeder.add_account("google", expires_in=-60)
    revoked = seeder.add_account("github", expires_in=-60)
    token_server.revoke(revoked.account_key)
    failing = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", provider="microsoft", account=failing.account_key, count=1)
    d = journal_daemon(migrated_env, journal, {
        "daemon": {"log_level": "debug"},
        "refresh": {"retry_min": "1s", "retry_max": "3s", "scan_interval": "2s"}})
    d.start()

    def rec(msgid_name, pred=lambda r: True, timeout=20):
        mid = ids[msgid_name]
        return journal.wait_for(lambda r: r.get("MESSAGE_ID") == mid and pred(r), timeout,
                                f"a record with MESSAGE_ID {msgid_name}")

    rec("STARTED")
    rec("READY")
    r = rec("REVOKED")
    assert r["OAUTH_ACCOUNT_ID"] == str(revoked.id) and r["OAUTH_PROVIDER"] == "github", r
    assert r["OAUTH_ERROR"] == "bad_refresh_token" and r["PRIORITY"] == "5", r
    r = rec("REFRESH_FAILED")
    assert r["OAUTH_ACCOUNT_ID"] == str(failing.id) and r["OAUTH_PROVIDER"] == "microsoft", r
    assert r["OAUTH_HTTP_STATUS"] == "503" and r["OAUTH_ERROR"] == "http_503", r
    assert r["PRIORITY"] == "4", r
    done = journal.wait_for(lambda r: r.get("OAUTH_ACCOUNT_ID") == str(ok.id)
                            and "OAUTH_EXPIRES_AT" in r, 20, "the per-account success record")
    assert done["PRIORITY"] == "7", f"per-account success is debug: {done}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", done["OAUTH_EXPIRES_AT"]), done

    # A rate-limited provider is paused, then resumed by the next good answer.
    limited = seeder.add_account("google", expires_in=-60)
    token_server.inject("429", provider="google", account=limited.account_key, count=1,
                        retry_after=1)
    r = rec("PROVIDER_PAUSED")
    assert r["OAUTH_PROVIDER"] == "google" and "429" in r["OAUTH_ERROR"], r
    assert rec("PROVIDER_RESUMED")["OAUTH_PROVIDER"] == "google"

    # The database connection killed: lost, then restored.
    wait_until(lambda: pg_cluster.terminate_backends(db.name) >= 1, timeout=5,
               message="the daemon's session terminated")
    assert rec("DB_LOST")["PRIORITY"] == "4"
    rec("DB_RESTORED")

    d.send_signal(signal.SIGHUP)
    rec("RELOADED")
    migrated_env.write_config({"refresh": {"no_such_key": "1"}})
    d.send_signal(signal.SIGHUP)
    r = rec("RELOAD_FAILED")
    assert r["PRIORITY"] == "3" and "no_such_key" in r["MESSAGE"], r

    d.send_signal(signal.SIGTERM)
    rec("STOPPING")
    assert d.wait(20) == 0, d.log_tail()

    records = journal.snapshot()
    assert all(r.get("SYSLOG_IDENTIFIER") == "oauth-refreshd" and "PRIORITY" in r
               and "MESSAGE" in r for r in records), records[:3]
    assert all("\n" not in r["MESSAGE"] for r in records)
    seen = {r.get("MESSAGE_ID") for r in records}
    # LISTEN_DEAF needs a pooler that swallows notifications: test_pooler.py, with this journal.
    missing = {n for n, m in ids.items() if m not in seen} - {"CONFIG_ERROR", "LISTEN_DEAF"}
    assert not missing, f"key events without their record: {missing}"
    with open(d.log_path) as f:
        stderr = f.read()
    assert stderr.strip() == "", f"under journald nothing goes to stderr, saw:\n{stderr[:2000]}"


def test_config_error_from_the_provider_has_its_message_id(
        migrated_env, seeder, token_server, journal):
    token_server.clients["github"] = ("test-github-client", "not-what-the-daemon-has")
    seeder.add_account("github", expires_in=-60)
    d = journal_daemon(migrated_env, journal)
    d.start()
    mid = message_ids()["CONFIG_ERROR"]
    r = journal.wait_for(lambda r: r.get("MESSAGE_ID") == mid, 20, "the CONFIG_ERROR record")
    assert r["OAUTH_PROVIDER"] == "github" and r["PRIORITY"] == "3", r
    d.terminate()


def test_journal_stream_naming_another_file_means_readable_stderr_lines(
        migrated_env, journal):
    d = journal_daemon(migrated_env, journal, match=False)
    d.start()
    d.wait_for_log(r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ oauth-refreshd\[\d+\]: info: ready: ",
                   timeout=30)
    d.terminate()
    assert journal.snapshot() == [], "JOURNAL_STREAM of another file: no native records"


def test_log_level_is_respected(migrated_env, seeder, token_server, events):
    failing = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", provider="microsoft", count=1)
    ok = seeder.add_account("google", expires_in=-60)
    d = continuous(migrated_env, {"daemon": {"log_level": "warning"},
                                  "refresh": {"retry_min": "1h", "retry_max": "1h"}})
    d.start()
    events.wait_for(lambda e: e["account_id"] in (ok.id, failing.id), count=2, timeout=20)
    d.wait_for_log(r": warning: account \d+ \(microsoft\): refresh failed", timeout=10)
    d.terminate()
    assert d.returncode == 0
    levels = set(re.findall(r"^\S+ oauth-refreshd\[\d+\]: (\w+): ", d.log(), re.M))
    assert levels <= {"warning", "error", "critical", "alert", "emergency"}, (
        f"log_level = warning: saw levels {levels}\n{d.log()}")


def test_per_account_success_is_debug_and_a_periodic_summary_is_info(
        migrated_env, seeder, token_server, events):
    accts = [seeder.add_account(p, expires_in=-60) for p in ("google", "github", "microsoft")]
    d = continuous(migrated_env, {"daemon": {"log_level": "info"}},
                   extra_env={"OAUTH_REFRESHD_SUMMARY_INTERVAL": "1"})
    d.start()
    events.wait_for(lambda e: e["event"] == "refreshed", count=3, timeout=20)
    m = d.wait_for_log(r": info: summary of the last \d+s: 3 refreshed, 0 failed; (.*)", timeout=10)
    assert "in flight" in m.group(1), m.group(0)
    log = d.log()
    for a in accts:
        assert not re.search(rf"account {a.id} refreshed", log), "per-account success is debug"
    d.terminate()

    migrated_env.write_config({"daemon": {"log_level": "debug"}})
    more = [seeder.add_account(p, expires_in=-60) for p in ("google", "github")]
    d = continuous(migrated_env, name="debug")
    d.start()
    for a in more:
        d.wait_for_log(rf": debug: account {a.id} refreshed, expires \S+Z", timeout=20)
    d.terminate()


# ---- no secret in any log line --------------------------------------------------------------

def _variants(secret):
    """The secret and recognisable pieces of it (a truncated leak is still a leak)."""
    out = {secret}
    if len(secret) >= 24:
        out.add(secret[:16])
        out.add(secret[-16:])
    return out


def test_no_token_secret_key_or_password_appears_in_any_log_line_or_status(
        migrated_env, seeder, token_server, events, db, fernet_keys, tmp_path):
    ns = NotifySocket()
    try:
        _leak_scenario(migrated_env, seeder, token_server, events, db, fernet_keys, tmp_path, ns)
    finally:
        ns.close()


def _leak_scenario(env, seeder, server, events, db, fernet_keys, tmp_path, ns):
    password = "pw-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    conninfo_file = tmp_path / "db.conninfo"
    host_dsn = db.dsn.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    assert password in host_dsn, host_dsn
    conninfo_file.write_text(host_dsn + "\n")
    os.chmod(conninfo_file, 0o600)
    base = {"daemon": {"log_level": "debug"},
            "database": {"conninfo": None, "conninfo_file": str(conninfo_file)},
            "refresh": {"retry_min": "1s", "retry_max": "2s", "scan_interval": "2s"}}
    env.write_config(base)

    seeded = []
    for p in ("google", "github", "microsoft"):
        seeded += [seeder.add_account(p, expires_in=-60) for _ in range(3)]
    seeded.append(seeder.add_account("google", expires_in=-60, id_token="eyJ.seeded-id-token." +
                                     base64.urlsafe_b64encode(os.urandom(24)).decode()))
    revoked = [seeded[0], seeded[3], seeded[6]]
    for a in revoked:
        server.revoke(a.account_key)
    server.inject("missing_access_token", provider="github", count=1, consume=True)
    server.inject("missing_expires_in", provider="microsoft", count=1)
    server.inject("not_json", provider="google", count=1)
    server.inject("http503", provider="microsoft", count=1)
    server.inject("invalid_grant", provider="microsoft", count=1)

    d = notify_daemon(env, ns, watchdog_usec=2_000_000, name="leak")
    d.start()
    d.wait_for_log("ready: connected", timeout=30)
    wait_until(lambda: len(events.events_for(event="refreshed")) >= 4, timeout=30,
               message="most accounts refreshed")

    # Reload with a rotated client secret and key list; then a broken config holding an
    # inline secret; then a password-bearing conninfo that cannot connect; then back.
    new_secret = ("test-github-client", "rotated-" + base64.urlsafe_b64encode(os.urandom(24)).decode())
    server.clients["github"] = new_secret
    env.clients["github"] = new_secret
    rotated = fernet_keys.with_new_primary()
    rotated.write(env.keys_file)
    env.write_config(base)
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reloaded", timeout=10)
    inline = "inline-" + base64.urlsafe_b64encode(os.urandom(24)).decode()
    env.write_config({**base, "provider.google": {"client_secret": inline,
                                                  "client_secret_file": None,
                                                  "token_url": "ftp://example.invalid/token"}})
    size = d.log_size()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reload failed", timeout=10, after=size)
    bad_password = "badpw-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    conninfo_file.write_text(f"postgresql://postgres:{bad_password}@127.0.0.1:1/nodb\n")
    env.write_config(base)
    size = d.log_size()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log(r"cannot connect to the database \(connect failed", timeout=10, after=size)
    conninfo_file.write_text(host_dsn + "\n")
    size = d.log_size()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("ready|restored", timeout=20, after=size)
    late = [seeder.add_account(p, expires_in=-60) for p in ("google", "github", "microsoft")]
    for a in late:
        events.wait_for(lambda e, a=a: e["account_id"] == a.id and e["event"] == "refreshed",
                        timeout=20)
    wait_until(lambda: len(events.events_for(event="revoked")) >= 3, timeout=20,
               message="the revoked accounts retried after their transient errors")
    d.terminate()
    assert d.returncode == 0, d.log_tail()
    # --once and --check-config logs too.
    rc, once_log = env.run_once()
    check = env.check_config()

    secrets_used = {}

    def add(kind, value):
        if value:
            for v in _variants(value):
                secrets_used[v] = kind

    for a in seeded + late:
        add("seeded refresh token", a.refresh_token)
        add("seeded access token", a.access_token)
        add("seeded id token", a.id_token)
    for r in server.requests:
        add("presented refresh token", r.refresh_token)
        add("issued access token", r.issued_access_token)
        add("issued refresh token", r.issued_refresh_token)
        add("issued id token", r.issued_id_token)
    for key in server.accounts():
        for t in server.issued_refresh_tokens(key) + server.issued_access_tokens(key):
            add("issued token", t)
    for _, secret in list(server.clients.values()) + list(env.clients.values()):
        add("client secret", secret)
    add("client secret", "test-github-secret")
    add("inline client secret", inline)
    for k in rotated.keys:
        add("fernet key", k.decode())
        raw = base64.urlsafe_b64decode(k)
        add("fernet key (hex)", raw.hex())
        add("fernet signing key (hex)", raw[:16].hex())
        add("fernet encryption key (hex)", raw[16:].hex())
        add("fernet key (std base64)", base64.b64encode(raw).decode())
    add("database password", password)
    add("database password", bad_password)
    ciphertexts = set()
    for row in seeder.rows():
        for col in ("access_token", "refresh_token", "id_token"):
            if row[col]:
                ciphertexts.add(row[col])
    assert len(secrets_used) > 100, f"the scenario should have used many secrets: {len(secrets_used)}"

    logs = {d.log_path: d.log(), "--once": once_log, "--check-config": check[1],
            "STATUS=": "\n".join(m.raw for m in ns.snapshot())}
    n_lines = 0
    for name, text in logs.items():
        for line in text.splitlines():
            n_lines += 1
            for s, kind in secrets_used.items():
                assert s not in line, f"{kind} leaked into {name}: {line[:300]}"
            for c in ciphertexts:
                assert c not in line, f"stored ciphertext leaked into {name}: {line[:300]}"
    # A floor that says the scenario logged at debug level (about 100 lines: every claim,
    # answer, write, reload and reconnection), not an exact count of how it says it.
    assert n_lines > 80, f"expected a rich debug log, saw {n_lines} lines"
    # The scenario did what it claims.
    assert len(events.events_for(event="revoked")) >= 3
    assert len(events.events_for(event="failed")) >= 2
    print(f"checked {n_lines} log lines against {len(secrets_used)} secrets and "
          f"{len(ciphertexts)} ciphertexts")


# ---- the token fingerprint (issue 14 part 4) ----------------------------------------------------

def test_journal_token_fingerprints_are_what_show_prints_and_no_token(
        migrated_env, seeder, token_server, journal):
    """OAUTH_TOKEN_FP of a record about one account is the fingerprint of the refresh token the
    attempt used, OAUTH_NEW_TOKEN_FP that of the one a rotation gave: the same short keyed hash
    `oauth-refreshctl show` prints for the token the account holds, and never a token."""
    ids = message_ids()
    failing = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("error", account=failing.account_key, count=1, status=400,
                        error="server_error", description="down; saw " + "Qk" * 30)
    revoked = seeder.add_account("google", expires_in=-60)
    token_server.revoke(revoked.account_key)
    rotated = seeder.add_account("github", expires_in=-60)  # GitHub rotates at every refresh
    d = journal_daemon(migrated_env, journal, {
        "daemon": {"log_level": "debug"},
        "refresh": {"retry_min": "1h", "retry_max": "1h", "scan_interval": "1h"}})
    d.start()

    def rec(pred, what):
        return journal.wait_for(pred, 20, what)

    def show_fp(account_id):
        p = migrated_env.ctl("show", "--json", str(account_id))
        assert p.returncode == 0, p.stderr
        fp = json.loads(p.stdout)["accounts"][0]["refresh_token_fp"]
        assert re.fullmatch(r"[0-9a-f]{12}", fp or ""), fp
        return fp

    r = rec(lambda r: r.get("MESSAGE_ID") == ids["REFRESH_FAILED"]
            and r.get("OAUTH_ACCOUNT_ID") == str(failing.id), "the failed record")
    assert "OAUTH_NEW_TOKEN_FP" not in r, r
    wait_until(lambda: seeder.db.scalar("SELECT last_error FROM oauth_refreshd.account_state "
                                        "WHERE account_id = %s", (failing.id,)) is not None,
               timeout=10, message="the failure recorded")
    assert r["OAUTH_TOKEN_FP"] == show_fp(failing.id), r

    r = rec(lambda r: r.get("MESSAGE_ID") == ids["REVOKED"]
            and r.get("OAUTH_ACCOUNT_ID") == str(revoked.id), "the revoked record")
    assert r["OAUTH_TOKEN_FP"] == show_fp(revoked.id), r

    r = rec(lambda r: r.get("OAUTH_ACCOUNT_ID") == str(rotated.id) and "OAUTH_EXPIRES_AT" in r,
            "the refreshed record")
    new_fp = show_fp(rotated.id)
    assert r["OAUTH_NEW_TOKEN_FP"] == new_fp and r["OAUTH_TOKEN_FP"] != new_fp, r
    new_rt = seeder.read(rotated.id)["refresh_token"]
    assert new_rt != rotated.refresh_token, "GitHub rotated"
    d.terminate()

    secrets_seen = [t for a in (failing, revoked, rotated)
                    for t in (a.refresh_token, a.access_token)] + [new_rt, "Qk" * 30]
    for rec_ in journal.snapshot():
        blob = "\n".join(f"{k}={v}" for k, v in rec_.items())
        assert not any(s in blob for s in secrets_seen), f"a token in a journal record: {rec_}"
