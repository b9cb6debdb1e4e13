"""Seeding a benchmark database with many accounts, fast.

Owns: inserting N accounts (users share up to three accounts, one per provider,
the providers taking turns) with server-side INSERT ... SELECT over
generate_series. Encrypting a million tokens with Python's Fernet would take
minutes, so a pool of POOL distinct refresh and access tokens per provider is
encrypted once (cryptography.fernet, the reference implementation) and the
ciphertexts are reused; the daemon only has to decrypt them. Token sizes follow
the providers' real ones.
Must never: print a token, or seed anything but the throwaway database it is given.
"""

import secrets
import string

from cryptography.fernet import Fernet

POOL = 1000
PROVIDERS = ("google", "github", "microsoft")
SCOPES = {"google": "openid https://www.googleapis.com/auth/userinfo.email",
          "github": "",
          "microsoft": "openid profile User.Read"}
_ALNUM = string.ascii_letters + string.digits


def _plain(provider, kind):
    n = {("google", "rt"): 100, ("google", "at"): 210, ("github", "rt"): 76,
         ("github", "at"): 36, ("microsoft", "rt"): 700, ("microsoft", "at"): 1400}[(provider, kind)]
    prefix = {("google", "rt"): "1//0g", ("google", "at"): "ya29.", ("github", "rt"): "ghr_",
              ("github", "at"): "ghu_", ("microsoft", "rt"): "M.C5",
              ("microsoft", "at"): "eyJ0eXAi."}[(provider, kind)]
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(n))


def ciphertext_pools(primary_key, pool=POOL):
    """{provider: (refresh_cts, access_cts)} encrypted under primary_key."""
    f = Fernet(primary_key)
    out = {}
    for p in PROVIDERS:
        out[p] = ([f.encrypt(_plain(p, "rt").encode()).decode() for _ in range(pool)],
                  [f.encrypt(_plain(p, "at").encode()).decode() for _ in range(pool)])
    return out


def seed(conn, n, primary_key, expires_sql, pool=POOL):
    """Inserts n accounts into oauth_accounts (and n/3 users). expires_sql is an SQL
    expression of g (1..n) giving each account's expires_at. Runs before
    `oauth-refreshctl migrate` so that the migration's bulk insert builds the
    daemon's state (no trigger per row). Returns the number of accounts."""
    pools = ciphertext_pools(primary_key, pool)
    seed_users(conn, n)
    seed_accounts(conn, 1, n, pools, expires_sql, pool)
    conn.execute("SELECT setval('oauth_accounts_id_seq', %s)", (n,))
    return n


def seed_users(conn, n):
    """The n/3 users that own n accounts (inserted before the accounts: foreign key)."""
    nusers = (n + 2) // 3
    with conn.transaction():
        conn.execute(
            "INSERT INTO users (id, username, email, password_hash, first_name, last_name, "
            "date_joined) SELECT u, 'bench-' || u, 'bench-' || u || '@example.test', 'x', "
            "'Bench', 'User', now() FROM generate_series(1, %s) u", (nusers,))
        conn.execute("SELECT setval('users_id_seq', %s)", (nusers,))


def seed_accounts(conn, lo, hi, pools, expires_sql, pool=POOL):
    """Accounts lo..hi (one statement; several ranges can be seeded on several
    connections at once: a 3,000,000-account table on two cores)."""
    with conn.transaction():
        # Account g: provider g % 3 (google, github, microsoft in turn), user (g+2)/3.
        conn.execute(
            f"""
            INSERT INTO oauth_accounts (id, user_id, provider, provider_account_id, access_token,
                                        refresh_token, expires_at, token_type, scope)
            SELECT g, (g + 2) / 3, p.name, p.name || '-' || g,
                   CASE p.name WHEN 'google' THEN (%(gat)s::text[])[1 + g %% %(pool)s]
                               WHEN 'github' THEN (%(hat)s::text[])[1 + g %% %(pool)s]
                               ELSE (%(mat)s::text[])[1 + g %% %(pool)s] END,
                   CASE p.name WHEN 'google' THEN (%(grt)s::text[])[1 + g %% %(pool)s]
                               WHEN 'github' THEN (%(hrt)s::text[])[1 + g %% %(pool)s]
                               ELSE (%(mrt)s::text[])[1 + g %% %(pool)s] END,
                   {expires_sql.replace("%", "%%")}, 'Bearer',
                   CASE p.name WHEN 'google' THEN %(gs)s WHEN 'github' THEN %(hs)s
                               ELSE %(ms)s END
              FROM generate_series(%(lo)s::integer, %(n)s::integer) g,
                   LATERAL (SELECT (ARRAY['google','github','microsoft'])[1 + (g - 1) %% 3]
                           AS name) p
            """,
            {"lo": lo, "n": hi, "pool": pool,
             "grt": pools["google"][0], "gat": pools["google"][1],
             "hrt": pools["github"][0], "hat": pools["github"][1],
             "mrt": pools["microsoft"][0], "mat": pools["microsoft"][1],
             "gs": SCOPES["google"], "hs": SCOPES["github"], "ms": SCOPES["microsoft"]})
