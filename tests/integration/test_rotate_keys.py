"""`oauth-refreshctl rotate-keys` and `status --keys` (issue 7): every token column ends up
under the new primary key, online (a continuous daemon refreshes and an "application"
writes rows meanwhile, and neither loses a write), resumable after SIGINT, with undecryptable
rows reported by id only; revocation and backoff state survive the re-encryption."""

import json
import random
import re
import signal
import subprocess
import threading
import time

from cryptography.fernet import Fernet, InvalidToken

from lib.daemon import clean_env, ctl_path, wait_until

TOKEN_COLUMNS = ("access_token", "refresh_token", "id_token")


def switch_to_new_primary(env, old_keys):
    """The operator's first step: a new key in front of the list, everywhere."""
    new = old_keys.with_new_primary()
    new.write(env.keys_file)
    env.keys = new
    return new


def all_rows(db):
    return db.execute("SELECT id, provider_account_id, access_token, refresh_token, id_token "
                      "FROM oauth_accounts ORDER BY id")


def assert_all_under(db, key):
    """Every non-empty token column opens with this one key alone."""
    f = Fernet(key)
    for row in all_rows(db):
        for col, tok in zip(TOKEN_COLUMNS, row[2:]):
            if tok:
                try:
                    f.decrypt(tok.encode())
                except InvalidToken:
                    raise AssertionError(f"account {row[0]}: {col} does not open with the new "
                                         f"primary key alone")


def report_counts(out):
    """The final report's numbers."""
    def num(label):
        m = re.search(rf"^\s+{re.escape(label)}\s+(\d+)$", out, re.M)
        assert m, f"no '{label}' line in the report:\n{out}"
        return int(m.group(1))
    dry = out.startswith("dry run")
    counts = {"rotated": num("to rotate:" if dry else "rotated:"),
              "current": num("already under the primary key:"),
              "skipped": 0 if dry else num("skipped (changed meanwhile):"),
              "undecryptable": num("undecryptable:")}
    m = re.search(r"rotation pass finished: (\d+) rows", out)
    counts["scanned"] = int(m.group(1)) if m else None
    m = re.search(r"looked at again: (\d+) rotated, (\d+) already under the primary key, "
                  r"(\d+) undecryptable, (\d+) still changing", out)
    counts["again"] = tuple(map(int, m.groups())) if m else (0, 0, 0, 0)
    return counts


def rotate(env, *args, timeout=300):
    p = env.ctl("rotate-keys", *args, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr


def census(env):
    p = env.ctl("status", "--json", "--keys")
    assert p.returncode == 0, f"status --json --keys: expected exit 0, saw {p.returncode}: {p.stderr}"
    return json.loads(p.stdout)["keys"]


def test_rotation_under_concurrent_refreshes_and_application_writes(
        migrated_env, seeder, token_server, fernet_keys, db):
    old = fernet_keys
    accts = []
    for p in ("google", "github", "microsoft"):
        accts += seeder.add_accounts(300, p, expires_in=-60)    # due: refreshed meanwhile
        accts += seeder.add_accounts(300, p, expires_in=7200)   # not due: only rotated
    with_id = [seeder.add_account("google", id_token=f"idt-{i}", expires_in=7200)
               for i in range(20)]
    # Refreshes that are in flight (their rows claimed) for the whole first look.
    held_keys = [seeder.new_account_key("github") for _ in range(5)]
    for k in held_keys:
        token_server.inject("delay", account=k, count=1, ms=4000)
    held = [seeder.add_account("github", account_key=k, expires_in=-60) for k in held_keys]
    total = len(accts) + len(with_id) + len(held)

    new = switch_to_new_primary(migrated_env, old)
    token_server.delay_ms = 5
    migrated_env.write_config({"refresh": {"max_in_flight": 40, "scan_interval": "2s"}})
    d = migrated_env.daemon("continuous")
    d.start()
    d.wait_for_log("ready", timeout=30)
    wait_until(lambda: token_server.in_flight() >= 5, timeout=20,
               message="the held refreshes in flight")

    # The application rewrites access and id tokens (with the new key list, as deployed).
    stop = threading.Event()
    app_writes = []
    ids = [a.id for a in accts + with_id]

    def application():
        conn = db.conn()
        rnd = random.Random(7)
        while not stop.is_set():
            aid = rnd.choice(ids)
            conn.execute("UPDATE oauth_accounts SET access_token = %s, id_token = %s, "
                         "updated_at = now() WHERE id = %s",
                         (new.encrypt(f"app-at-{aid}"), new.encrypt(f"app-idt-{aid}"), aid))
            app_writes.append(aid)
            time.sleep(0.002)

    app = threading.Thread(target=application, daemon=True)
    app.start()
    try:
        rc, out, err = rotate(migrated_env, "--batch-size", "50")
    finally:
        stop.set()
        app.join(10)
    assert rc == 0, f"rotate-keys: expected exit 0, saw {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert app_writes, "the application thread wrote nothing"

    print(out)
    c = report_counts(out)
    assert c["scanned"] == total, f"expected a pass over {total} rows, saw {c['scanned']}\n{out}"
    assert c["rotated"] + c["current"] + c["skipped"] + c["undecryptable"] == total, c
    assert c["undecryptable"] == 0, out
    assert c["skipped"] >= len(held), (
        f"the {len(held)} rows claimed by refreshes in flight must be skipped, saw {c['skipped']}")
    again = c["again"]
    assert sum(again) == c["skipped"], f"looked-at-again counts {again} != skipped {c['skipped']}"
    assert again[2] == 0 and again[3] == 0, f"nothing may stay undecryptable or changing: {again}"

    wait_until(lambda: all(token_server.refresh_count(a.account_key) >= 1
                           for a in held), timeout=30, message="the held refreshes done")
    d.terminate(timeout=30)
    assert d.returncode == 0, d.log_tail()
    m = re.search(r"exiting: (\d+) refreshed, (\d+) failed, (\d+) revoked, (\d+) discarded",
                  d.log())
    assert m, d.log_tail()
    assert m.group(3) == "0" and m.group(4) == "0", (
        f"no write-back may be discarded and nothing revoked because of the rotation: {m.group(0)}")

    assert_all_under(db, new.primary)
    # No refresh result was lost: the stored refresh token is the one the provider honours.
    f = Fernet(new.primary)
    stored = {r[1]: r[3] for r in all_rows(db)}
    for a in accts + held:
        current = token_server.current_refresh_token(a.account_key)
        seen = f.decrypt(stored[a.account_key].encode()).decode()
        assert seen == current, (f"account {a.id} ({a.provider}): the stored refresh token is not "
                                 f"the provider's current one: a refresh result was lost")
    assert token_server.violations() == [], token_server.violations()
    k = census(migrated_env)
    assert k["under_older_keys"] == 0 and k["undecryptable"] == 0, k
    assert k["by_key"][1] == 0, f"no token may need the old key any more: {k}"


def test_interrupted_rotation_resumes_and_completes(migrated_env, seeder, fernet_keys, db):
    seeder.add_accounts(3000, "google", expires_in=7200)
    new = switch_to_new_primary(migrated_env, fernet_keys)
    argv = [ctl_path(), "-c", migrated_env.config_path, "rotate-keys", "--batch-size", "100",
            "--rate", "1500"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        wait_until(lambda: (db.scalar("SELECT max(last_id) FROM oauth_refreshd.rotation_progress")
                            or 0) >= 300, timeout=20, interval=0.02,
                   message="the first batches of the rotation")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    out = out.decode()
    assert p.returncode == 1, f"an interrupted rotation exits 1, saw {p.returncode}\n{out}\n{err}"
    m = re.search(r"interrupted after account id (\d+)", out)
    assert m, f"expected 'interrupted after account id N' in:\n{out}"
    stopped_at = int(m.group(1))
    saved = db.scalar("SELECT last_id FROM oauth_refreshd.rotation_progress")
    assert saved == stopped_at, f"saved progress {saved} != reported {stopped_at}"
    f_new = Fernet(new.primary)
    done = under_new = 0
    for r in all_rows(db):
        try:
            f_new.decrypt(r[3].encode())
            under_new += 1
        except InvalidToken:
            pass
        done += r[0] <= stopped_at
    assert under_new == done, f"rows up to {stopped_at} ({done}) are rotated, no others; saw {under_new}"
    assert 300 <= done < 3000, f"the interruption came after the first batches, not at {done}"

    rc, out2, err2 = rotate(migrated_env)
    assert rc == 0, f"the resumed run: expected exit 0, saw {rc}\n{out2}\n{err2}"
    assert f"after account id {stopped_at}" in out2, out2
    c = report_counts(out2)
    assert c["rotated"] == 3000 - done and c["current"] == 0, c
    assert_all_under(db, new.primary)
    assert db.scalar("SELECT finished_at IS NOT NULL FROM oauth_refreshd.rotation_progress")

    rc, out3, _ = rotate(migrated_env)
    assert rc == 0 and "starting a new pass" in out3, out3
    c = report_counts(out3)
    assert c["rotated"] == 0 and c["current"] == 3000, c


def test_restart_ignores_saved_progress_and_dry_run_writes_nothing(
        migrated_env, seeder, fernet_keys, db):
    seeder.add_accounts(200, "github", expires_in=7200)
    new = switch_to_new_primary(migrated_env, fernet_keys)
    before = all_rows(db)
    rc, out, err = rotate(migrated_env, "--dry-run")
    assert rc == 0, f"{out}\n{err}"
    assert "dry run: nothing was written" in out and report_counts(out)["rotated"] == 200, out
    assert all_rows(db) == before, "a dry run must not write"
    assert db.scalar("SELECT count(*) FROM oauth_refreshd.rotation_progress") == 0

    # Pretend an earlier run stopped halfway; --restart goes over everything again.
    rc, out, _ = rotate(migrated_env)
    assert rc == 0, out
    halfway = "UPDATE oauth_refreshd.rotation_progress SET finished_at = NULL, last_id = " \
              "(SELECT max(id) FROM oauth_accounts)"
    db.execute(halfway)
    rc, out, _ = rotate(migrated_env, "--restart")
    assert rc == 0 and "--restart: ignoring the progress saved" in out, out
    c = report_counts(out)
    assert c["scanned"] == 200 and c["current"] == 200, c
    db.execute(halfway)
    rc, out, _ = rotate(migrated_env)
    assert rc == 0 and report_counts(out)["scanned"] == 0, f"resume at the end: nothing left\n{out}"
    assert_all_under(db, new.primary)


def test_undecryptable_rows_are_reported_by_id_and_left_untouched(
        migrated_env, seeder, fernet_keys, db):
    good = [seeder.add_account("google", expires_in=7200) for _ in range(5)]
    foreign_rt = Fernet(Fernet.generate_key()).encrypt(b"rt-secret-plaintext").decode()
    bad1 = seeder.add_account("github", expires_in=7200, raw={"refresh_token": foreign_rt})
    bad2 = seeder.add_account("google", expires_in=7200, raw={"id_token": "not-a-fernet-token"})
    untouched = {b.id: seeder.row(b.id) for b in (bad1, bad2)}
    new = switch_to_new_primary(migrated_env, fernet_keys)

    rc, out, err = rotate(migrated_env)
    assert rc == 1, f"undecryptable rows: expected exit 1, saw {rc}\n{out}\n{err}"
    m = re.search(r"undecryptable account ids \(no key in the list opens a token column\):(.*)",
                  out)
    assert m, out
    assert sorted(map(int, m.group(1).split())) == sorted([bad1.id, bad2.id]), m.group(1)
    c = report_counts(out)
    assert c["undecryptable"] == 2 and c["rotated"] == 5, c
    for text in (out, err):
        assert foreign_rt not in text and "rt-secret-plaintext" not in text
        assert "not-a-fernet-token" not in text, "token text must never be printed"
    for b in (bad1, bad2):
        assert seeder.row(b.id) == untouched[b.id], f"account {b.id} must be left as it was"
    f = Fernet(new.primary)
    for a in good:
        row = seeder.row(a.id)
        assert f.decrypt(row["refresh_token"].encode()).decode() == a.refresh_token

    k = census(migrated_env)
    assert k["undecryptable"] == 2 and sorted(k["undecryptable_ids"]) == sorted([bad1.id, bad2.id]), k


def test_rotation_keeps_revocation_and_backoff_and_wakes_no_daemon(
        migrated_env, seeder, token_server, fernet_keys, db, listen_factory):
    rev = seeder.add_account("github", expires_in=-60)
    token_server.revoke(rev.account_key)
    failing = seeder.add_account("google", expires_in=-60)
    token_server.inject("http503", account=failing.account_key, count=1)
    rc, log = migrated_env.run_once()
    assert rc == 1, log  # the 503 is a failed attempt
    cols = "revoked, revoked_at, attempts, retry_at, last_error, due_at"
    state_before = db.execute(f"SELECT account_id, {cols} FROM oauth_refreshd.account_state "
                              "ORDER BY account_id")
    assert any(s[1] for s in state_before) and any(s[5] == "http_503" for s in state_before)

    changed = listen_factory("oauth_refreshd_account_changed")
    new = switch_to_new_primary(migrated_env, fernet_keys)
    rc, out, err = rotate(migrated_env)
    assert rc == 0, f"{out}\n{err}"
    assert report_counts(out)["rotated"] == 2, out
    assert_all_under(db, new.primary)
    state_after = db.execute(f"SELECT account_id, {cols} FROM oauth_refreshd.account_state "
                             "ORDER BY account_id")
    assert state_after == state_before, (f"re-encryption is not a new token: state must stay\n"
                                         f"before {state_before}\nafter  {state_after}")
    time.sleep(0.5)
    assert changed.payloads == [], f"rotation must not wake daemons: {changed.payloads}"


def test_status_keys_counts_tokens_per_key(migrated_env, seeder, fernet_keys, db):
    seeder.add_accounts(50, "microsoft", expires_in=7200)  # access + refresh tokens
    seeder.add_account("google", id_token="idt", expires_in=7200)
    new = switch_to_new_primary(migrated_env, fernet_keys)
    k = census(migrated_env)
    assert k == {"keys": 2, "tokens": 103, "by_key": [0, 103], "under_primary": 0,
                 "under_older_keys": 103, "undecryptable": 0, "rows_needing_rotation": 51,
                 "undecryptable_ids": []}, k
    p = migrated_env.ctl("status", "--keys")
    text = p.stdout.decode()
    assert "run `oauth-refreshctl rotate-keys` before removing an older key" in text, text
    rc, out, _ = rotate(migrated_env)
    assert rc == 0, out
    k = census(migrated_env)
    assert k["by_key"] == [103, 0] and k["rows_needing_rotation"] == 0, k
    text = migrated_env.ctl("status", "--keys").stdout.decode()
    assert "no token needs an older key: they can be removed" in text, text
    # Without --keys no decryption happens (and no key list is needed).
    p = migrated_env.ctl("status", "--json")
    assert "keys" not in json.loads(p.stdout), "status without --keys must stay cheap"
    assert_all_under(db, new.primary)
