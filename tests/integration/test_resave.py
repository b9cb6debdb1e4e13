"""The application re-saves a row while the daemon refreshes it (issue 10 part 4).

Django's encrypted fields re-encrypt every field on Model.save(): the same refresh token gets a
new Fernet ciphertext. SPEC §6: tokens are compared as plaintext, so a re-save of the same
refresh token has not changed it and the refreshed result is written; a different refresh token
stored meanwhile wins. Each test holds the provider's answer, writes the row as the application
would, then lets the answer go.
"""

import threading
import time

import pytest

from lib.daemon import wait_until


def resave(db, keys, acct_id, refresh_plain, access_plain):
    """What Model.save() does to an unchanged account: every encrypted field re-encrypted."""
    db.execute("UPDATE oauth_accounts SET access_token = %s, refresh_token = %s, "
               "updated_at = now() WHERE id = %s",
               (keys.encrypt(access_plain), keys.encrypt(refresh_plain), acct_id))


def hold_first_request(migrated_env, token_server, name):
    token_server.hold()
    d = migrated_env.daemon(name)
    d.start()
    wait_until(lambda: token_server.in_flight() == 1, timeout=20, message="request held")
    return d


def state(db, acct_id):
    cols = ("revoked", "lease_owner", "attempts", "last_error")
    r = db.execute(f"SELECT {', '.join(cols)} FROM oauth_refreshd.account_state "
                   "WHERE account_id = %s", (acct_id,))[0]
    return dict(zip(cols, r))


@pytest.mark.parametrize("provider", ["github", "microsoft"])
def test_resave_of_the_same_token_during_a_refresh_keeps_the_rotated_token(
        migrated_env, seeder, token_server, db, fernet_keys, events, provider):
    a = seeder.add_account(provider, expires_in=-60)
    before = seeder.row(a.id)
    d = hold_first_request(migrated_env, token_server, "resave")
    resave(db, fernet_keys, a.id, a.refresh_token, a.access_token)
    assert seeder.row(a.id)["refresh_token"] != before["refresh_token"], "a new ciphertext"
    token_server.release()

    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "refreshed", timeout=20)
    live = token_server.current_refresh_token(a.account_key)
    assert live != a.refresh_token, f"{provider} rotates"
    wait_until(lambda: seeder.read(a.id)["refresh_token"] == live, timeout=10,
               message="the row holds the token the provider considers live")
    row = seeder.read(a.id)
    assert row["access_token"] == token_server.issued_access_tokens(a.account_key)[-1]
    time.sleep(1.0)  # a second refresh or a second event would show up meanwhile
    assert len(events.events_for(a.id, "refreshed")) == 1, events.events_for(a.id)
    assert token_server.refresh_count(a.account_key) == 1
    assert token_server.violations() == [], token_server.violations()
    assert state(db, a.id)["lease_owner"] is None
    assert "result discarded" not in d.log(), d.log_tail()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_a_different_token_stored_during_a_refresh_wins(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    a = seeder.add_account("github", expires_in=-60)
    d = hold_first_request(migrated_env, token_server, "newer")
    # The application stores another refresh token (the provider still answers the old one:
    # e.g. a token the application got elsewhere); it must not be overwritten.
    theirs = "ghr_from_the_application"
    resave(db, fernet_keys, a.id, theirs, "at-from-the-application")
    token_server.release()

    d.wait_for_log("result discarded", timeout=20)
    assert token_server.refresh_count(a.account_key) == 1, "the provider did answer"
    row = seeder.read(a.id)
    assert (row["refresh_token"], row["access_token"]) == (theirs, "at-from-the-application")
    assert not events.events_for(a.id, "refreshed")
    wait_until(lambda: state(db, a.id)["lease_owner"] is None, timeout=10,
               message="the claim is given back after the discard")
    d.terminate()
    assert d.returncode == 0, d.log_tail()


class BusyApplication:
    """Three application sessions that take turns re-saving one account with the same tokens,
    each holding the row locked (a new ciphertext of the same token, uncommitted) for 200 ms
    while the others wait their turn: whenever the daemon's write arrives, the row is held and
    changes under it (two sessions queued, so one slow to queue again leaves no gap)."""

    def __init__(self, db, keys, acct):
        self.db, self.keys, self.acct = db, keys, acct
        self.stop_event = threading.Event()
        self.saves = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(3)]

    def _run(self):
        conn = self.db.conn()
        while not self.stop_event.is_set():
            with conn.transaction():
                conn.execute("UPDATE oauth_accounts SET access_token = %s, refresh_token = %s, "
                             "updated_at = now() WHERE id = %s",
                             (self.keys.encrypt(self.acct.access_token),
                              self.keys.encrypt(self.acct.refresh_token), self.acct.id))
                time.sleep(0.2)
            self.saves.append(time.monotonic())

    def start(self):
        for t in self.threads:
            t.start()
        wait_until(lambda: len(self.saves) >= 3, timeout=10, message="the application is saving")

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)


def test_repeated_resaves_while_the_result_is_written_do_not_lose_it(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    """After a few immediate tries the daemon says so loudly and tries again later; the
    rotated token is kept (spooled, in memory) and written once the application stops."""
    a = seeder.add_account("github", expires_in=-60)
    d = hold_first_request(migrated_env, token_server, "busy")
    app = BusyApplication(db, fernet_keys, a)
    app.start()
    try:
        token_server.release()
        d.wait_for_log("re-saved the row 3 times", timeout=20)
        assert not events.events_for(a.id, "refreshed"), "not written while it is re-saved"
        d.wait_for_log("re-saved the row 6 times", timeout=20)
        assert "result discarded" not in d.log(), d.log_tail()
    finally:
        app.stop()
    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "refreshed", timeout=20)
    live = token_server.current_refresh_token(a.account_key)
    wait_until(lambda: seeder.read(a.id)["refresh_token"] == live, timeout=10,
               message="the row holds the token the provider considers live")
    time.sleep(0.5)
    assert len(events.events_for(a.id, "refreshed")) == 1
    assert token_server.refresh_count(a.account_key) == 1
    assert token_server.violations() == [], token_server.violations()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_a_result_waiting_on_resaves_is_kept_in_the_spool_through_a_crash(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    """The spool entry stays while the result waits: a daemon killed then leaves it to the
    next one, whose replay finds the row re-saved (yet another ciphertext) and writes it."""
    a = seeder.add_account("github", expires_in=-60)
    d = hold_first_request(migrated_env, token_server, "first")
    app = BusyApplication(db, fernet_keys, a)
    app.start()
    try:
        token_server.release()
        d.wait_for_log("re-saved the row 3 times", timeout=20)
        d.kill()
    finally:
        app.stop()
    assert not events.events_for(a.id, "refreshed")
    resave(db, fernet_keys, a.id, a.refresh_token, a.access_token)
    d2 = migrated_env.daemon("second")
    d2.start()
    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "refreshed", timeout=20)
    live = token_server.current_refresh_token(a.account_key)
    wait_until(lambda: seeder.read(a.id)["refresh_token"] == live, timeout=10,
               message="the replayed result holds the token the provider considers live")
    time.sleep(0.5)
    assert token_server.refresh_count(a.account_key) == 1, "written from the spool, not refreshed"
    assert token_server.violations() == [], token_server.violations()
    d2.terminate()
    assert d2.returncode == 0, d2.log_tail()


def test_a_refusal_is_a_revocation_even_when_the_same_token_was_re_saved_meanwhile(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    a = seeder.add_account("github", expires_in=-60)
    token_server.revoke(a.account_key)  # the user revoked the grant at the provider
    d = hold_first_request(migrated_env, token_server, "revoked")
    resave(db, fernet_keys, a.id, a.refresh_token, a.access_token)
    token_server.release()

    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "revoked", timeout=20)
    st = state(db, a.id)
    assert (st["revoked"], st["lease_owner"]) == (True, None), st
    assert "lost race" not in d.log(), d.log_tail()
    time.sleep(1.0)
    assert len(token_server.requests_for(a.account_key)) == 1, "a revoked account is left alone"
    assert len(events.events_for(a.id, "revoked")) == 1
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_current_refresh_tokens_answers_in_input_order_with_null_for_a_gone_account(
        migrated_env, seeder, db):
    a = seeder.add_account("github")
    b = seeder.add_account("google")
    got = db.execute("SELECT * FROM oauth_refreshd.current_refresh_tokens(%s::bigint[])",
                     ([b.id, 999999, a.id],))
    assert got == [(b.id, seeder.row(b.id)["refresh_token"]), (999999, None),
                   (a.id, seeder.row(a.id)["refresh_token"])], got


# ---- issue 15 part 2: a re-save of a revoked account's token is no new token ----------------

def revoke_through_the_daemon(migrated_env, seeder, token_server, events, name):
    """An account the provider refuses, marked revoked by a running daemon."""
    a = seeder.add_account("github", expires_in=-60)
    token_server.revoke(a.account_key)
    migrated_env.write_config({"refresh": {"scan_interval": "1s"}})
    d = migrated_env.daemon(name)
    d.start()
    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "revoked", timeout=20)
    return a, d


def revoked_state(db, acct_id):
    r = db.execute("SELECT revoked, due_at FROM oauth_refreshd.account_state "
                   "WHERE account_id = %s", (acct_id,))[0]
    return {"revoked": r[0], "due_at": r[1]}


def test_a_re_save_of_a_revoked_token_keeps_the_revocation_and_a_new_token_lifts_it(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    a, d = revoke_through_the_daemon(migrated_env, seeder, token_server, events, "revoked")
    # The application saves the account unchanged: a new ciphertext of the refused token.
    resave(db, fernet_keys, a.id, a.refresh_token, a.access_token)
    time.sleep(3)  # three rescans: a request or a second event would show up
    assert len(token_server.requests_for(a.account_key)) == 1, "no request for the same token"
    assert len(events.events_for(a.id, "revoked")) == 1, "no second revoked event"
    assert revoked_state(db, a.id) == {"revoked": True, "due_at": None}
    assert "it stays revoked" in d.log(), d.log_tail()

    # The user connects the account again: a different refresh token lifts the revocation.
    fresh = token_server.issue("github", a.account_key)
    db.execute("UPDATE oauth_accounts SET refresh_token = %s, access_token = %s, "
               "expires_at = now() - interval '1 minute' WHERE id = %s",
               (fernet_keys.encrypt(fresh), fernet_keys.encrypt("at-new"), a.id))
    d.wait_for_log("revocation is lifted", timeout=20)
    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "refreshed", timeout=20)
    wait_until(lambda: seeder.read(a.id)["refresh_token"]
               == token_server.current_refresh_token(a.account_key), timeout=10,
               message="the new token was refreshed and written")
    assert revoked_state(db, a.id)["revoked"] is False
    assert token_server.violations() == [], token_server.violations()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_a_refresh_request_for_a_revoked_account_sends_nothing(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    a, d = revoke_through_the_daemon(migrated_env, seeder, token_server, events, "request")
    db.execute("SELECT pg_notify('oauth_refresh_request', %s)", (str(a.id),))
    d.wait_for_log(f"refresh of account {a.id} requested", timeout=20)
    time.sleep(2.0)
    assert len(token_server.requests_for(a.account_key)) == 1, "the daemon stops trying"
    assert len(events.events_for(a.id, "revoked")) == 1
    assert revoked_state(db, a.id)["revoked"] is True
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_once_from_cron_keeps_a_re_saved_revocation_and_lifts_a_new_token(
        migrated_env, seeder, token_server, db, fernet_keys, events):
    a = seeder.add_account("github", expires_in=-60)
    token_server.revoke(a.account_key)
    rc, log = migrated_env.run_once()
    assert revoked_state(db, a.id)["revoked"] is True, log
    resave(db, fernet_keys, a.id, a.refresh_token, a.access_token)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert "it stays revoked" in log, log
    assert len(token_server.requests_for(a.account_key)) == 1, "no request for the same token"
    assert revoked_state(db, a.id) == {"revoked": True, "due_at": None}
    fresh = token_server.issue("github", a.account_key)
    db.execute("UPDATE oauth_accounts SET refresh_token = %s WHERE id = %s",
               (fernet_keys.encrypt(fresh), a.id))
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert seeder.read(a.id)["refresh_token"] == token_server.current_refresh_token(a.account_key)
    assert len(events.events_for(a.id, "revoked")) == 1
