"""The Django key schemes of `[crypto] key_derivation` (issue 7), proven against Python:
keys are derived here exactly as django-fernet-fields (HKDF-SHA256) and
django-fernet-encrypted-fields (PBKDF2-HMAC-SHA256, 100,000 iterations) derive them,
tokens are encrypted here, the daemon refreshes the accounts with --once, and the
tokens it wrote are decrypted here with the app's own key list."""

import base64
import os

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from lib.seed import FernetKeys, Seeder

# Secrets shaped like real Django settings: '#', ';', '$' and non-ASCII must survive the
# secret files verbatim (no comment stripping, UTF-8 bytes).
SECRET_KEY = "django-insecure-k#3$v=+q!x;y(8)z@w^u&t*s%r_p-é"
OLD_SECRET_KEY = "an older secret ; with # signs"


# ---- exactly what the packages do ---------------------------------------------------------

def fernet_fields_key(input_key):
    """django-fernet-fields, fernet_fields/hkdf.py: derive_fernet_key(input_key)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"django-fernet-fields-hkdf-salt",
                info=b"django-fernet-fields")
    data = input_key.encode("utf-8") if isinstance(input_key, str) else input_key  # force_bytes
    return base64.urlsafe_b64encode(hkdf.derive(data))


def fernet_fields_keys(secret_key, fernet_keys=None):
    """EncryptedField.fernet_keys: FERNET_KEYS (default [SECRET_KEY]) through HKDF."""
    keys = fernet_keys if fernet_keys is not None else [secret_key]
    return [fernet_fields_key(k) for k in keys]


def encrypted_fields_keys(secret_key, fallbacks, salt_key):
    """django-fernet-encrypted-fields, EncryptedFieldMixin.keys."""
    keys = []
    salt_keys = salt_key if isinstance(salt_key, list) else [salt_key]
    for sk in [secret_key] + fallbacks:
        for salt in salt_keys:
            kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=bytes(salt, "utf-8"),
                             iterations=100_000)
            keys.append(base64.urlsafe_b64encode(kdf.derive(sk.encode("utf-8"))))
    return keys


def write_secret(path, lines):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    return path


SCHEMES = {
    # name: (config keys -> file lines, Python key list, index of the key the app used)
    "none": None,
    "fernet-fields-secret-key": (
        "django-fernet-fields", {"secret_key_file": [SECRET_KEY]},
        fernet_fields_keys(SECRET_KEY), 0),
    "fernet-fields-fernet-keys": (
        "django-fernet-fields", {"fernet_keys_file": ["new fernet key material", SECRET_KEY]},
        fernet_fields_keys(SECRET_KEY, ["new fernet key material", SECRET_KEY]), 1),
    "encrypted-fields-one-salt": (
        "django-fernet-encrypted-fields",
        {"secret_key_file": [SECRET_KEY], "salt_keys_file": ["pepper"]},
        encrypted_fields_keys(SECRET_KEY, [], "pepper"), 0),
    "encrypted-fields-fallbacks-and-salts": (
        "django-fernet-encrypted-fields",
        {"secret_key_file": [SECRET_KEY], "secret_key_fallbacks_file": [OLD_SECRET_KEY],
         "salt_keys_file": ["salt-one", "salt-two"]},
        encrypted_fields_keys(SECRET_KEY, [OLD_SECRET_KEY], ["salt-one", "salt-two"]), 3),
}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_tokens_round_trip_between_python_and_the_daemon(
        scheme, daemon_env, db, token_server, events):
    spec = SCHEMES[scheme]
    if spec is None:
        derivation, files, keys, used = "none", {}, [Fernet.generate_key(), Fernet.generate_key()], 1
    else:
        derivation, files, keys, used = spec
    crypto = {"keys_file": None, "key_derivation": derivation}
    if derivation == "none":
        crypto["keys_file"] = FernetKeys(keys).write(os.path.join(daemon_env.dir, "app.keys"))
    for key, lines in files.items():
        crypto[key] = write_secret(os.path.join(daemon_env.dir, f"{key}.txt"), lines)
    daemon_env.write_config({"crypto": crypto})
    daemon_env.migrate()

    app = MultiFernet([Fernet(k) for k in keys])  # what the Django field decrypts with
    older = Fernet(keys[used])                     # the key the stored tokens were made with
    seeder = Seeder(db, FernetKeys(keys), token_server)
    accts = []
    for p in ("google", "github", "microsoft"):
        key = seeder.new_account_key(p)
        rt = token_server.issue(p, key)
        accts.append(seeder.add_account(p, account_key=key, refresh_token=rt, expires_in=-60,
                                        id_token=f"idt-{p}",
                                        raw={"refresh_token": older.encrypt(rt.encode()).decode(),
                                             "id_token": older.encrypt(f"idt-{p}".encode()).decode()}))

    rc, log = daemon_env.run_once()
    assert rc == 0, f"{scheme}: expected exit 0 from --once, saw {rc}\n{log}"
    primary = Fernet(keys[0])
    for a in accts:
        row = seeder.row(a.id)
        issued = token_server.issued_access_tokens(a.account_key)
        assert issued, f"{scheme}: account {a.id} was not refreshed (the daemon could not decrypt?)"
        at = app.decrypt(row["access_token"].encode()).decode()
        rt = app.decrypt(row["refresh_token"].encode()).decode()
        assert at == issued[-1], f"{scheme}: access token does not round-trip"
        assert rt == token_server.current_refresh_token(a.account_key), (
            f"{scheme}: refresh token does not round-trip")
        # The provider's new id_token when it sent one, else the app's, kept as stored.
        sent_idt = token_server.requests_for(a.account_key)[-1].issued_id_token
        assert app.decrypt(row["id_token"].encode()).decode() == (sent_idt or f"idt-{a.provider}")
        # New tokens are made with the first key of the list, as MultiFernet.encrypt does.
        for col in ("access_token", "refresh_token"):
            try:
                primary.decrypt(row[col].encode())
            except InvalidToken:
                raise AssertionError(f"{scheme}: {col} was not encrypted with the first key")
    for text in [SECRET_KEY, OLD_SECRET_KEY] + [k.decode() for k in keys]:
        assert text not in log, f"{scheme}: a secret appeared in the log"

    # The operator's tool uses the same derived list.
    p = daemon_env.ctl("encrypt", input="hello from the daemon's key list")
    assert p.returncode == 0, p.stderr
    assert app.decrypt(p.stdout.strip()) == b"hello from the daemon's key list"
    p = daemon_env.ctl("decrypt", input=older.encrypt(b"made by the app"))
    assert p.returncode == 0 and p.stdout == b"made by the app", p.stderr


def test_a_wrong_salt_is_not_silently_accepted(daemon_env, db, token_server):
    """Keys derived with another SALT_KEY open nothing: the account fails precisely, untouched."""
    right = encrypted_fields_keys(SECRET_KEY, [], "right-salt")
    crypto = {"keys_file": None, "key_derivation": "django-fernet-encrypted-fields",
              "secret_key_file": write_secret(os.path.join(daemon_env.dir, "sk"), [SECRET_KEY]),
              "salt_keys_file": write_secret(os.path.join(daemon_env.dir, "salt"), ["wrong-salt"])}
    daemon_env.write_config({"crypto": crypto})
    daemon_env.migrate()
    seeder = Seeder(db, FernetKeys(right), token_server)
    a = seeder.add_account("google", expires_in=-60)
    before = seeder.row(a.id)
    rc, log = daemon_env.run_once()
    assert rc == 1, f"an undecryptable token is a failed attempt: expected 1, saw {rc}\n{log}"
    assert "undecryptable_refresh_token" in log, log
    assert seeder.row(a.id) == before
    assert token_server.requests == [], "nothing may be sent without a decryptable token"
