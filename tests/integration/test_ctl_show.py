"""`oauth-refreshctl show`: one account's story (issue 14 part 4).

Against the real PostgreSQL, token server and daemon: accounts in each state (fresh, due,
refreshing under a held answer, failing with the provider's words redacted, revoked), the
selections (--provider, --user, --state, --limit), the --json shape, the exit codes (1 for
an unknown id, 64 bad arguments, 69 no database), the fingerprint of the refresh token
(keyed BLAKE2b, the same the journal's OAUTH_TOKEN_FP carries) and never a token, and the
whole command run as the least-privilege role of `oauth-refreshctl grants`.
"""

import base64
import hashlib
import json
import re
import socket

from lib.daemon import wait_until
from test_least_privilege import apply_grants, daemon_role, role_dsn  # noqa: F401 (fixture)

# A token-like run inside the provider's error_description: the daemon redacts it.
SECRETISH = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def fingerprint(keys, token):
    """What token_fingerprint() documents: BLAKE2b-256 keyed with the primary Fernet key's
    32 bytes, personalisation "oauthrd-fp-v1", the first 12 hex digits."""
    key = base64.urlsafe_b64decode(keys.primary)
    return hashlib.blake2b(token.encode(), digest_size=32, key=key,
                           person=b"oauthrd-fp-v1").hexdigest()[:12]


def show(env, *args, rc=0, config=True):
    p = env.ctl("show", *args, config=config)
    assert p.returncode == rc, (p.returncode, p.stdout.decode(), p.stderr.decode())
    return p


def show_json(env, *args, rc=0):
    return json.loads(show(env, "--json", *args, rc=rc).stdout)


def one(env, account_id):
    doc = show_json(env, str(account_id))
    assert doc["not_found"] == [] and len(doc["accounts"]) == 1, doc
    return doc["accounts"][0]


def assert_no_token(text, *accounts):
    for a in accounts:
        for t in (a.refresh_token, a.access_token):
            assert t is None or t not in text, "a token in show's output"


def fail_then_revoke(env, seeder, token_server):
    """A failing microsoft account (the provider's words hold a token-like run) and a
    revoked github account, after one --once run."""
    failing = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("error", account=failing.account_key, count=1, status=400,
                        error="server_error",
                        description=f"backend down while checking {SECRETISH}; try later")
    revoked = seeder.add_account("github", expires_in=-60)
    token_server.revoke(revoked.account_key)
    env.write_config({"refresh": {"retry_min": "10min", "retry_max": "1h"}})
    rc, log = env.run_once()
    assert rc == 1, log
    return failing, revoked


def test_show_tells_each_accounts_story(migrated_env, seeder, token_server, fernet_keys):
    failing, revoked = fail_then_revoke(migrated_env, seeder, token_server)
    fresh = seeder.add_account("google", expires_in=7200)
    due = seeder.add_account("github", expires_in=-60)

    a = one(migrated_env, fresh.id)
    assert a["state"] == "fresh" and a["provider"] == "google", a
    assert a["account_id"] == fresh.id and a["user_id"] == fresh.user_id, a
    assert re.fullmatch(ISO, a["expires_at"]) and 7000 < a["expires_at_in_s"] <= 7200, a
    # Due 5 minutes (the lead time) before it expires.
    assert abs(a["next_due_at_in_s"] - (a["expires_at_in_s"] - 300)) < 2, a
    assert a["attempts"] == 0 and a["last_error"] is None and a["lease"] is None, a
    assert a["last_refreshed_at"] is None and a["refresh_count"] == 0, a
    assert a["refresh_token_fp"] == fingerprint(fernet_keys, fresh.refresh_token), a

    a = one(migrated_env, due.id)
    assert a["state"] == "due" and a["next_due_at_in_s"] < 0, a

    a = one(migrated_env, failing.id)
    assert a["state"] == "failing" and a["attempts"] == 1, a
    err = a["last_error"]
    assert err["code"] == "server_error", err
    assert re.fullmatch(ISO, err["at"]) and err["at_in_s"] <= 0, err
    assert "backend down while checking" in err["detail"], err
    assert "[redacted]" in err["detail"] and SECRETISH not in err["detail"], err
    assert a["next_due_at"] == a["retry_at"] and a["next_due_at_in_s"] > 60, \
        f"the retry time (retry_min 10min, jittered) is the next due: {a}"
    assert a["refresh_token_fp"] == fingerprint(fernet_keys, failing.refresh_token), a

    a = one(migrated_env, revoked.id)
    assert a["state"] == "revoked" and re.fullmatch(ISO, a["revoked_at"]), a
    assert a["next_due_at"] is None and a["last_error"]["code"], a

    # The refreshed one, after a run: counted, and its new token's fingerprint.
    rc, log = migrated_env.run_once()
    a = one(migrated_env, due.id)
    assert a["state"] == "fresh" and a["refresh_count"] == 1, a
    assert a["last_refreshed_at_in_s"] <= 0 and a["attempts"] == 0, a
    now_rt = seeder.read(due.id)["refresh_token"]
    assert a["refresh_token_fp"] == fingerprint(fernet_keys, now_rt), a

    # The text: one block per account, aligned labels, times absolute and relative.
    p = show(migrated_env, str(fresh.id), str(failing.id), str(revoked.id))
    text = p.stdout.decode()
    blocks = text.split("\n\n")
    assert len(blocks) == 3 and blocks[0].startswith(f"account {fresh.id}\n"), text
    assert re.search(rf"(?m)^  state: +fresh$", blocks[0]), text
    assert re.search(rf"(?m)^  expires at: +{ISO} \(in (1h59m|2h00m)\)$", blocks[0]), text
    assert re.search(r"(?m)^  last error: +\S+ at " + ISO + r" \((now|\d+s ago)\)$", blocks[1]), text
    assert re.search(r"(?m)^  provider said: +.*\[redacted\]", blocks[1]), text
    assert re.search(r"(?m)^  state: +revoked$", blocks[2]), text
    fp = fingerprint(fernet_keys, fresh.refresh_token)
    assert re.search(rf"(?m)^  refresh token: +fingerprint {fp}\b", blocks[0]), text
    assert len({m.end() - m.start() for m in re.finditer(r"(?m)^  [a-z ]+: +", text)}) == 1, \
        f"labels aligned: {text}"
    assert_no_token(text + p.stderr, fresh, failing, revoked, due)
    assert SECRETISH not in text


def test_show_a_refresh_in_flight_names_its_lease(migrated_env, seeder, token_server):
    a = seeder.add_account("google", expires_in=-60)
    token_server.hold()
    migrated_env.write_config({"refresh": {"scan_interval": "1h"}})
    d = migrated_env.daemon("held")
    d.start()
    try:
        wait_until(lambda: token_server.in_flight() >= 1, timeout=30, message="a request held")
        got = one(migrated_env, a.id)
        assert got["state"] == "refreshing", got
        lease = got["lease"]
        assert lease["owner"] and re.fullmatch(ISO, lease["until"]) and lease["until_in_s"] > 0, got
        text = show(migrated_env, str(a.id)).stdout.decode()
        assert re.search(r"(?m)^  state: +refreshing \(lease held by " + re.escape(lease["owner"])
                         + r" until " + ISO + r" \(in \S+\)\)$", text), text
    finally:
        token_server.release()
    wait_until(lambda: one(migrated_env, a.id)["state"] == "fresh", timeout=30,
               message="refreshed once the answer came")
    d.terminate()


def test_show_selects_by_provider_user_and_state(migrated_env, seeder, token_server):
    failing, revoked = fail_then_revoke(migrated_env, seeder, token_server)
    user = seeder.add_user()
    mine = [seeder.add_account("google", expires_in=7200, user_id=user),
            seeder.add_account("github", expires_in=7200, user_id=user)]
    others = [seeder.add_account("google", expires_in=7200) for _ in range(3)]
    due = seeder.add_account("microsoft", expires_in=120)  # within the 5-minute lead time

    doc = show_json(migrated_env, "--user", str(user))
    assert [x["account_id"] for x in doc["accounts"]] == [m.id for m in mine], doc
    assert doc["more"] is False and doc["limit"] == 50 and doc["not_found"] == [], doc

    doc = show_json(migrated_env, "--provider", "google")
    assert {x["account_id"] for x in doc["accounts"]} == {mine[0].id} | {o.id for o in others}
    assert all(x["provider"] == "google" for x in doc["accounts"])

    doc = show_json(migrated_env, "--state", "failing")
    assert [x["account_id"] for x in doc["accounts"]] == [failing.id], doc
    doc = show_json(migrated_env, "--state", "revoked")
    assert [x["account_id"] for x in doc["accounts"]] == [revoked.id], doc
    doc = show_json(migrated_env, "--state", "due")
    assert [x["account_id"] for x in doc["accounts"]] == [due.id], doc
    doc = show_json(migrated_env, "--provider", "google", "--user", str(user))
    assert [x["account_id"] for x in doc["accounts"]] == [mine[0].id], doc

    doc = show_json(migrated_env, "--state", "fresh", "--limit", "2")
    assert len(doc["accounts"]) == 2 and doc["more"] is True, doc
    text = show(migrated_env, "--state", "fresh", "--limit", "2").stdout.decode()
    assert "more accounts match" in text and "--limit" in text, text
    text = show(migrated_env, "--state", "refreshing").stdout.decode()
    assert text.strip() == "no account matches", text


def test_show_json_shape(migrated_env, seeder):
    a = seeder.add_account("google", expires_in=7200)
    doc = show_json(migrated_env, str(a.id))
    assert set(doc) == {"accounts", "not_found", "limit", "more"}, doc
    assert doc["limit"] is None and doc["more"] is False
    assert set(doc["accounts"][0]) == {
        "account_id", "user_id", "provider", "state", "lease", "expires_at", "expires_at_in_s",
        "next_due_at", "next_due_at_in_s", "retry_at", "attempts", "last_error", "revoked_at",
        "revoked_at_in_s", "last_refreshed_at", "last_refreshed_at_in_s", "refresh_count",
        "refresh_token_fp", "refresh_token_fp_note"}, doc


def test_show_exit_codes(migrated_env, seeder, db):
    a = seeder.add_account("google", expires_in=7200)
    missing = a.id + 1000
    p = show(migrated_env, str(a.id), str(missing), rc=1)
    assert f"account {a.id}\n" in p.stdout.decode()
    assert f"account {missing} not found" in p.stderr, p.stderr
    doc = show_json(migrated_env, str(missing), rc=1)
    assert doc["accounts"] == [] and doc["not_found"] == [missing], doc

    for args in ([], ["abc"], ["0"], ["--state", "sleepy"], ["--provider", "myspace"],
                 ["--user", "x"], ["--limit", "0", "--state", "due"], ["1", "--state", "due"],
                 ["--bogus", "1"], ["1", "--limit", "5"]):
        p = show(migrated_env, *args, rc=64)
        assert p.stdout == b"", args

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = show(migrated_env, "--conninfo", f"host=127.0.0.1 port={port} dbname=x connect_timeout=2",
             "1", rc=69, config=False)
    assert "cannot connect" in p.stderr


def test_show_without_the_keys_still_tells_the_story(migrated_env, seeder, db):
    a = seeder.add_account("google", expires_in=7200)
    got = json.loads(show(migrated_env, "--json", "--conninfo", db.dsn, str(a.id),
                          config=False).stdout)["accounts"][0]
    assert got["state"] == "fresh" and got["refresh_token_fp"] is None, got
    assert "key list" in got["refresh_token_fp_note"], got


def test_show_reads_bytea_hex_tokens(migrated_env, seeder, fernet_keys):
    rt = "1//hex-stored-refresh-token"
    ct = fernet_keys.encrypt(rt)
    a = seeder.add_account("google", expires_in=7200, refresh_token=rt,
                           raw={"refresh_token": "\\x" + ct.encode().hex()})
    assert one(migrated_env, a.id)["refresh_token_fp"] == fingerprint(fernet_keys, rt)


def test_show_runs_as_the_least_privilege_role(migrated_env, seeder, token_server, db,
                                               daemon_role, fernet_keys):  # noqa: F811
    failing, revoked = fail_then_revoke(migrated_env, seeder, token_server)
    apply_grants(migrated_env, db, daemon_role)
    migrated_env.write_config({"database": {"conninfo": role_dsn(db, daemon_role)}})
    doc = show_json(migrated_env, str(failing.id), str(revoked.id))
    assert [x["state"] for x in doc["accounts"]] == ["failing", "revoked"], doc
    assert "[redacted]" in doc["accounts"][0]["last_error"]["detail"], doc
    assert doc["accounts"][0]["refresh_token_fp"] == fingerprint(fernet_keys,
                                                                 failing.refresh_token)
    doc = show_json(migrated_env, "--state", "failing")
    assert [x["account_id"] for x in doc["accounts"]] == [failing.id], doc


def test_show_a_partial_result_keeps_the_new_tokens_fingerprint_and_the_words(
        migrated_env, seeder, token_server, fernet_keys):
    """A rotation answered without an access token: the new refresh token is stored and the
    attempt failed; show has the failure, the provider's words and the new token's
    fingerprint (store_refreshed's partial path)."""
    a = seeder.add_account("github", expires_in=-60)
    token_server.inject("rotate_broken", provider="github", account=a.account_key, count=1,
                        breakage="no_access_token")
    migrated_env.write_config({"refresh": {"retry_min": "10min", "retry_max": "1h"}})
    rc, log = migrated_env.run_once()
    assert rc == 1, log
    got = one(migrated_env, a.id)
    assert got["state"] == "failing" and got["attempts"] == 1, got
    assert got["last_error"]["code"] == "missing_access_token", got
    assert got["last_error"]["detail"], got
    new_rt = seeder.read(a.id)["refresh_token"]
    assert new_rt != a.refresh_token
    assert got["refresh_token_fp"] == fingerprint(fernet_keys, new_rt), got
    assert_no_token(json.dumps(got) + log, a)
    assert new_rt not in json.dumps(got) and new_rt not in log


def test_migrate_upgrades_the_previous_version_2_to_one_form_of_each_function(
        migrated_env, db, oauth_source_dir):
    """Schema version 2 is unreleased: a database migrated by the build before
    last_error_detail gets the column, and the store functions keep one signature each
    (a call with the old number of arguments must not be ambiguous)."""
    import subprocess
    old = subprocess.run(["git", "-C", oauth_source_dir, "show",
                          "53578ff:sql/oauth-refreshd.sql"], capture_output=True, text=True)
    if old.returncode != 0:
        import pytest
        pytest.skip("no git history of the SQL here")
    db.execute("DROP SCHEMA oauth_refreshd CASCADE")
    psql = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-1", db.dsn],
                          input=old.stdout, capture_output=True, text=True, timeout=60)
    assert psql.returncode == 0, psql.stderr
    assert db.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                     "'oauth_refreshd' AND column_name = 'last_error_detail'") == 0
    p = migrated_env.ctl("migrate")
    assert p.returncode == 0, p.stderr
    assert db.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                     "'oauth_refreshd' AND column_name = 'last_error_detail'") == 1
    for name in ("store_refreshed", "store_failed", "store_revoked"):
        n = db.scalar("SELECT count(*) FROM pg_proc WHERE proname = %s AND pronamespace = "
                      "'oauth_refreshd'::regnamespace", (name,))
        assert n == 1, f"{name}: {n} signatures"
    assert migrated_env.ctl("migrate").returncode == 0, "idempotent"
