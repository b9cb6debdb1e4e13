"""`oauth-refreshctl status` names each live lease for what it is (issue 15 part 4).

A daemon's lease is a refresh in flight; the 10-second lease `rotate-keys` puts on every
row it has just re-encrypted (lease_owner 'oauth-refreshctl rotate-keys', see
sql/oauth-refreshd.sql rotate_batch) is not, and status must not call it "claimed by a
running daemon".
"""

import json
import re

from test_rotate_keys import switch_to_new_primary


def status(env, *args):
    p = env.ctl("status", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def test_status_tells_rotate_keys_leases_from_refreshes_in_flight(migrated_env, seeder,
                                                                  fernet_keys, db):
    accounts = [seeder.add_account("google", expires_in=7200) for _ in range(3)]
    daemon_owned = seeder.add_account("github", expires_in=7200)
    switch_to_new_primary(migrated_env, fernet_keys)
    p = migrated_env.ctl("rotate-keys")
    assert p.returncode == 0, p.stderr
    db.execute("UPDATE oauth_refreshd.account_state SET lease_owner = 'host:1', "
               "lease_until = now() + interval '30 seconds' WHERE account_id = %s",
               (daemon_owned.id,))
    owners = dict(db.execute("SELECT account_id, lease_owner FROM oauth_refreshd.account_state "
                             "WHERE lease_until > now()"))
    assert all(owners.get(a.id) == "oauth-refreshctl rotate-keys" for a in accounts), owners

    st = json.loads(status(migrated_env, "--json"))
    assert st["leased"] == 1, f"only the daemon's lease is a refresh in flight: {st}"
    assert st["rotate_keys_leased"] == 3, st

    text = status(migrated_env)
    assert re.search(r"(?m)^in flight:\s+1 \(claimed by a running daemon\)$", text), text
    assert re.search(r"(?m)^re-encrypted:\s+3 \(held 10s by `oauth-refreshctl rotate-keys`, "
                     r"not a refresh\)$", text), text


def test_status_without_rotate_keys_leases_says_nothing_about_them(migrated_env, seeder):
    seeder.add_account("google", expires_in=7200)
    st = json.loads(status(migrated_env, "--json"))
    assert st["leased"] == 0 and st["rotate_keys_leased"] == 0, st
    assert "rotate-keys" not in status(migrated_env)
