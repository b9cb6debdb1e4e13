"""Seeding the application's tables the way the Django application would.

Owns: Fernet key files (0600, one key per line, primary first) and inserting
users + oauth_accounts rows whose token columns are encrypted with Python's
cryptography.fernet (the independent reference implementation), and reading
rows back decrypted. An account's provider_account_id is its "account key",
the name the token server knows it by.
Must never: encrypt with anything but cryptography.fernet, or print tokens.
"""

import datetime
import itertools
import os
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, MultiFernet

DEFAULT_SCOPES = {
    "google": "openid https://www.googleapis.com/auth/userinfo.email",
    "github": "",
    "microsoft": "openid profile User.Read",
}

TOKEN_COLUMNS = ("access_token", "refresh_token", "id_token")
ROW_COLUMNS = ("id", "user_id", "provider", "provider_account_id", "access_token", "refresh_token",
               "id_token", "expires_at", "token_type", "scope", "created_at", "updated_at")

AUTO = object()
_counter = itertools.count(1)


class FernetKeys:
    """A key list in MultiFernet order (first = primary) and, once written, its file."""

    def __init__(self, keys=None, path=None):
        self.keys = [k if isinstance(k, bytes) else k.encode() for k in (keys or [Fernet.generate_key()])]
        self.path = path
        self.multi = MultiFernet([Fernet(k) for k in self.keys])

    @property
    def primary(self):
        return self.keys[0]

    def write(self, path=None, mode=0o600, comment=True):
        self.path = path or self.path
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            if comment:
                f.write("# Fernet keys, primary first (test fixture)\n")
            for k in self.keys:
                f.write(k.decode() + "\n")
        os.chmod(self.path, mode)
        return self.path

    def encrypt(self, plaintext):
        if plaintext is None:
            return None
        if isinstance(plaintext, str):
            plaintext = plaintext.encode()
        return self.multi.encrypt(plaintext).decode()

    def decrypt(self, token):
        """Plaintext str of a stored token (None stays None); raises InvalidToken."""
        if token is None:
            return None
        return self.multi.decrypt(token.encode() if isinstance(token, str) else token).decode()

    def with_new_primary(self):
        """A new key list with a fresh primary and these keys after it (key rotation tests)."""
        return FernetKeys([Fernet.generate_key()] + self.keys)


def make_keys_file(path, n=1):
    keys = FernetKeys([Fernet.generate_key() for _ in range(n)])
    keys.write(path)
    return keys


@dataclass
class SeededAccount:
    id: int
    user_id: int
    provider: str
    account_key: str
    refresh_token: str   # plaintext as seeded
    access_token: str
    id_token: str
    scope: str
    expires_at: datetime.datetime


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


class Seeder:
    def __init__(self, db, keys, server=None):
        self.db = db
        self.keys = keys
        self.server = server

    def new_account_key(self, provider):
        return f"{provider}-{next(_counter)}-{secrets.token_hex(4)}"

    def add_user(self, username=None):
        username = username or f"user-{next(_counter)}-{secrets.token_hex(4)}"
        return self.db.scalar(
            "INSERT INTO users (username, email, password_hash, first_name, last_name, date_joined) "
            "VALUES (%s, %s, 'pbkdf2_sha256$x', 'Test', 'User', now()) RETURNING id",
            (username, f"{username}@example.test"))

    def _expires(self, expires_in, expires_at):
        if expires_at is not None:
            return expires_at
        if expires_in is None:
            return None
        return utcnow() + datetime.timedelta(seconds=expires_in)

    def _tokens(self, provider, key, refresh_token, access_token, id_token, scope):
        if refresh_token is AUTO:
            if self.server is not None:
                refresh_token = self.server.issue(provider, key, scope=scope)
            else:
                refresh_token = "rt-" + secrets.token_urlsafe(24)
        if access_token is AUTO:
            access_token = "at-" + secrets.token_urlsafe(24)
        return refresh_token, access_token, id_token

    def add_account(self, provider, account_key=None, *, user_id=None, refresh_token=AUTO,
                    access_token=AUTO, id_token=None, expires_in=-60, expires_at=None,
                    scope=AUTO, token_type="Bearer", raw=None):
        """Inserts one account. expires_in: seconds from now (negative = already expired, the
        default, so it is due); None with expires_at None stores NULL. refresh_token=None stores
        NULL (not refreshable). With a server, the refresh token is the one it issued.
        raw: dict of column -> value stored as-is (e.g. a corrupt ciphertext)."""
        key = account_key or self.new_account_key(provider)
        scope = DEFAULT_SCOPES[provider] if scope is AUTO else scope
        rt, at, it = self._tokens(provider, key, refresh_token, access_token, id_token, scope)
        user_id = user_id or self.add_user()
        exp = self._expires(expires_in, expires_at)
        cols = {"user_id": user_id, "provider": provider, "provider_account_id": key,
                "access_token": self.keys.encrypt(at), "refresh_token": self.keys.encrypt(rt),
                "id_token": self.keys.encrypt(it), "expires_at": exp, "token_type": token_type,
                "scope": scope}
        cols.update(raw or {})
        names = ", ".join(cols)
        marks = ", ".join(["%s"] * len(cols))
        aid = self.db.scalar(f"INSERT INTO oauth_accounts ({names}) VALUES ({marks}) RETURNING id",
                             tuple(cols.values()))
        return SeededAccount(aid, user_id, provider, key, rt, at, it, scope, exp)

    def add_accounts(self, n, provider, *, expires_in=-60, scope=AUTO, spread=0.0):
        """Inserts n accounts fast (COPY), one user each. spread: expires_in grows by this many
        seconds per account (for ordering tests). Returns SeededAccounts in insertion order."""
        scope = DEFAULT_SCOPES[provider] if scope is AUTO else scope
        now = utcnow()
        tag = secrets.token_hex(4)
        first = next(_counter)
        for _ in range(n):
            next(_counter)
        by_name = dict(self.db.execute(
            "INSERT INTO users (username, email, password_hash, first_name, last_name, date_joined) "
            "SELECT 'bulk-' || %s || '-' || g, 'bulk-' || %s || '-' || g || '@example.test', "
            "'x', 'Bulk', 'User', now() FROM generate_series(%s::int, %s::int) g "
            "RETURNING username, id", (tag, tag, first, first + n - 1)))
        user_ids = [by_name[f"bulk-{tag}-{first + i}"] for i in range(n)]
        accounts = []
        rows = []
        for i in range(n):
            key = f"{provider}-{first + i}-{tag}"
            rt, at, it = self._tokens(provider, key, AUTO, AUTO, None, scope)
            exp = now + datetime.timedelta(seconds=expires_in + spread * i)
            rows.append((user_ids[i], provider, key, self.keys.encrypt(at), self.keys.encrypt(rt),
                         exp, "Bearer", scope))
            accounts.append(SeededAccount(None, user_ids[i], provider, key, rt, at, None, scope, exp))
        conn = self.db.conn()
        with conn.cursor() as cur:
            with cur.copy("COPY oauth_accounts (user_id, provider, provider_account_id, access_token, "
                          "refresh_token, expires_at, token_type, scope) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            ids = dict(conn.execute(
                "SELECT provider_account_id, id FROM oauth_accounts WHERE provider_account_id "
                "LIKE %s", (f"{provider}-%-{tag}",)).fetchall())
        conn.close()
        for a in accounts:
            a.id = ids[a.account_key]
        return accounts

    # ----- reading back ----------------------------------------------------------------------

    def row(self, account_id):
        """The raw row as a dict (ciphertext as stored), for byte-identical comparisons."""
        rows = self.db.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM oauth_accounts WHERE id = %s",
                               (account_id,))
        return dict(zip(ROW_COLUMNS, rows[0])) if rows else None

    def rows(self):
        return [dict(zip(ROW_COLUMNS, r)) for r in self.db.execute(
            f"SELECT {', '.join(ROW_COLUMNS)} FROM oauth_accounts ORDER BY id")]

    def read(self, account_id):
        """The row with access/refresh/id tokens decrypted (raises InvalidToken if one does not)."""
        r = self.row(account_id)
        if r is None:
            return None
        for c in TOKEN_COLUMNS:
            r[c + "_ciphertext"] = r[c]
            r[c] = self.keys.decrypt(r[c])
        return r

    def account_key_of(self, account_id):
        return self.db.scalar("SELECT provider_account_id FROM oauth_accounts WHERE id = %s",
                              (account_id,))

    def id_of(self, account_key):
        return self.db.scalar("SELECT id FROM oauth_accounts WHERE provider_account_id = %s",
                              (account_key,))
