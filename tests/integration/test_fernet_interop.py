"""oauth-refreshctl keygen/encrypt/decrypt against Python's cryptography.fernet.

The independent reference is Python's cryptography package (Fernet and
MultiFernet), the library the application that shares the database uses. Each
test drives the built binary ($OAUTH_BUILD_DIR/oauth-refreshctl) with
--keys-file, so no configuration file is involved, and checks the bytes both
ways: tokens the C code writes decrypt in Python, tokens Python writes decrypt
in C, byte-exact, for payloads from 0 bytes to 1 MiB.
"""

import os
import random
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

BUILD_DIR = Path(os.environ.get("OAUTH_BUILD_DIR", "build"))
CTL = BUILD_DIR / "oauth-refreshctl"

# Sizes around the AES block and base64 quantum edges, then up to 1 MiB.
SIZES = [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 47, 48, 100, 255, 256, 1000, 4095, 4096,
         65535, 65536, 65537, 300_000, 1 << 20]
SEED = int(os.environ.get("OAUTH_TEST_SEED", "20240611"))


def ctl(*args, stdin=b"", check=None):
    if not CTL.exists():
        pytest.fail(f"expected the built binary at {CTL}; build oauth-refreshctl first")
    proc = subprocess.run([str(CTL), *args], input=stdin, capture_output=True, timeout=60)
    if check is not None and proc.returncode != check:
        pytest.fail(f"oauth-refreshctl {' '.join(args)}: expected exit {check}, saw "
                    f"{proc.returncode}; stderr: {proc.stderr.decode(errors='replace')!r}")
    return proc


def keys_file(tmp_path, *keys, name="fernet.keys", mode=0o600):
    path = tmp_path / name
    path.write_bytes(b"".join(k + b"\n" for k in keys))
    path.chmod(mode)
    return str(path)


def payload(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n)) if n < 4096 else rng.randbytes(n)


@pytest.fixture
def rng():
    return random.Random(SEED)


@pytest.mark.parametrize("size", SIZES)
def test_c_encrypts_what_python_fernet_decrypts(tmp_path, rng, size):
    key = Fernet.generate_key()
    kf = keys_file(tmp_path, key)
    data = payload(rng, size)
    before = int(time.time())
    out = ctl("encrypt", "--keys-file", kf, stdin=data, check=0).stdout
    assert out.endswith(b"\n") and not out.endswith(b"\n\n"), \
        f"expected the token and exactly one newline, saw tail {out[-3:]!r}"
    token = out[:-1]
    assert re.fullmatch(rb"[A-Za-z0-9_-]+=*", token), "expected a urlsafe base64 token"
    f = Fernet(key)
    assert f.decrypt(token) == data, f"Python decrypted something else for size {size}"
    ts = f.extract_timestamp(token)
    assert before - 1 <= ts <= int(time.time()) + 1, f"expected a current timestamp, saw {ts}"


@pytest.mark.parametrize("size", SIZES)
def test_python_fernet_tokens_decrypt_byte_exact(tmp_path, rng, size):
    key = Fernet.generate_key()
    kf = keys_file(tmp_path, key)
    data = payload(rng, size)
    token = Fernet(key).encrypt(data)
    out = ctl("decrypt", "--keys-file", kf, stdin=token + b"\n", check=0)
    assert out.stdout == data, \
        f"expected {size} plaintext bytes, saw {len(out.stdout)} (first diff matters)"
    assert out.stderr == b""


def test_random_sizes_round_trip_both_directions(tmp_path, rng):
    for _ in range(12):
        key = Fernet.generate_key()
        kf = keys_file(tmp_path, key)
        data = payload(rng, rng.randint(0, 1 << 20))
        c_token = ctl("encrypt", "--keys-file", kf, stdin=data, check=0).stdout
        assert Fernet(key).decrypt(c_token.strip()) == data
        py_token = Fernet(key).encrypt(data)
        assert ctl("decrypt", "--keys-file", kf, stdin=py_token, check=0).stdout == data
        # and the C binary reads its own tokens
        assert ctl("decrypt", "--keys-file", kf, stdin=c_token, check=0).stdout == data


@pytest.mark.parametrize("wrapping", [b"%s", b"%s\n", b"%s\r\n", b"  %s \n\n", b"\t%s\t"])
def test_decrypt_ignores_whitespace_around_the_token(tmp_path, wrapping):
    key = Fernet.generate_key()
    token = Fernet(key).encrypt(b"ya29.secret-access-token")
    out = ctl("decrypt", "--keys-file", keys_file(tmp_path, key), stdin=wrapping % token,
              check=0)
    assert out.stdout == b"ya29.secret-access-token"


def test_plaintext_with_newlines_and_nuls_is_kept_byte_exact(tmp_path):
    key = Fernet.generate_key()
    kf = keys_file(tmp_path, key)
    data = b"\n\x00line\r\n\x00\xff\n"
    token = ctl("encrypt", "--keys-file", kf, stdin=data, check=0).stdout
    assert Fernet(key).decrypt(token) == data
    assert ctl("decrypt", "--keys-file", kf, stdin=token, check=0).stdout == data


def assert_rejected(proc, token=b""):
    assert proc.returncode == 1, f"expected exit 1, saw {proc.returncode}"
    assert proc.stdout == b"", f"expected nothing on stdout, saw {proc.stdout[:80]!r}"
    assert proc.stderr.strip(), "expected a message on stderr"
    if len(token) >= 12:
        for i in range(0, len(token) - 12, 4):
            assert token[i:i + 12] not in proc.stderr, "stderr quotes the token"


def test_tampered_tokens_exit_1_with_nothing_on_stdout(tmp_path, rng):
    key = Fernet.generate_key()
    kf = keys_file(tmp_path, key)
    token = Fernet(key).encrypt(b"refresh-token-value")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    positions = sorted(set([0, 1, 5, 10, 20, 40, len(token) // 2, len(token) - 5,
                            len(token) - 3] + rng.sample(range(len(token) - 2), 10)))
    for pos in positions:
        orig = token[pos]
        if orig == ord("="):
            continue
        repl = alphabet[(alphabet.index(orig) + 1) % 64]
        bad = token[:pos] + bytes([repl]) + token[pos + 1:]
        # Python agrees the token is bad (or, for non-canonical tail bits that
        # Python's lenient decoder maps to the same bytes, we are stricter).
        proc = ctl("decrypt", "--keys-file", kf, stdin=bad)
        assert_rejected(proc, bad)
    # truncated, extended, garbage, empty, standard-alphabet spelling
    std = token.replace(b"-", b"+").replace(b"_", b"/")
    if std == token:
        std = b"+" + token[1:]
    for bad in [token[:-4], token[:40], token + b"AAAA", b"not a token", b"gAAAA", b"",
                b"\n\n", std, token[:20] + b" " + token[20:]]:
        assert_rejected(ctl("decrypt", "--keys-file", kf, stdin=bad), bad)


def test_foreign_key_tokens_are_rejected(tmp_path):
    kf = keys_file(tmp_path, Fernet.generate_key(), Fernet.generate_key())
    foreign = Fernet(Fernet.generate_key()).encrypt(b"payload")
    proc = ctl("decrypt", "--keys-file", kf, stdin=foreign)
    assert_rejected(proc, foreign)
    assert b"does not verify" in proc.stderr


def test_keygen_output_is_a_python_fernet_key(tmp_path):
    outs = set()
    for _ in range(3):
        out = ctl("keygen", check=0).stdout
        assert re.fullmatch(rb"[A-Za-z0-9_-]{43}=\n", out), f"unexpected keygen output {out!r}"
        key = out[:-1]
        outs.add(key)
        f = Fernet(key)  # raises if Python does not accept it
        assert f.decrypt(f.encrypt(b"x")) == b"x"
        # and our own binary accepts its own key with Python-made tokens
        kf = keys_file(tmp_path, key)
        assert ctl("decrypt", "--keys-file", kf, stdin=f.encrypt(b"abc"), check=0).stdout \
            == b"abc"
    assert len(outs) == 3, "expected distinct keys from each keygen"


def test_multifernet_second_key_decrypts_and_first_key_encrypts(tmp_path):
    k1, k2, k3 = (Fernet.generate_key() for _ in range(3))
    kf = tmp_path / "multi.keys"
    kf.write_bytes(b"# rotated keys, primary first\n" + k1 + b"\n\n  " + k2 + b"  \r\n"
                   b"# retired\n" + k3 + b"\n")
    kf.chmod(0o600)
    token_k2 = Fernet(k2).encrypt(b"made by the second key")
    assert ctl("decrypt", "--keys-file", str(kf), stdin=token_k2, check=0).stdout \
        == b"made by the second key"
    token_k3 = MultiFernet([Fernet(k3)]).encrypt(b"third")
    assert ctl("decrypt", "--keys-file", str(kf), stdin=token_k3, check=0).stdout == b"third"

    c_token = ctl("encrypt", "--keys-file", str(kf), stdin=b"new", check=0).stdout.strip()
    assert Fernet(k1).decrypt(c_token) == b"new", "encrypt must use the first key"
    with pytest.raises(InvalidToken):
        Fernet(k2).decrypt(c_token)
    assert MultiFernet([Fernet(k3), Fernet(k2), Fernet(k1)]).decrypt(c_token) == b"new"
    # Python's rotate() of our token (to k2 as primary) still decrypts in C.
    rotated = MultiFernet([Fernet(k2), Fernet(k1)]).rotate(c_token)
    assert ctl("decrypt", "--keys-file", str(kf), stdin=rotated, check=0).stdout == b"new"


def test_invalid_keys_file_exits_78_naming_the_line(tmp_path):
    good = Fernet.generate_key()
    kf = tmp_path / "bad.keys"
    kf.write_bytes(good + b"\n# fine\n" + good[:-2] + b"\n")
    kf.chmod(0o600)
    for cmd, stdin in (("encrypt", b"x"), ("decrypt", Fernet(good).encrypt(b"x"))):
        proc = ctl(cmd, "--keys-file", str(kf), stdin=stdin)
        assert proc.returncode == 78, f"{cmd}: expected exit 78, saw {proc.returncode}"
        assert proc.stdout == b""
        assert b"line 3: not a valid Fernet key" in proc.stderr, proc.stderr
        assert good[:20] not in proc.stderr and good[10:30] not in proc.stderr, \
            "stderr quotes key text"


@pytest.mark.parametrize("content", [b"", b"# only a comment\n\n"])
def test_empty_keys_file_exits_78(tmp_path, content):
    kf = tmp_path / "empty.keys"
    kf.write_bytes(content)
    kf.chmod(0o600)
    proc = ctl("encrypt", "--keys-file", str(kf), stdin=b"x")
    assert proc.returncode == 78 and b"no keys" in proc.stderr, proc.stderr


def test_missing_keys_file_exits_78(tmp_path):
    proc = ctl("decrypt", "--keys-file", str(tmp_path / "nope.keys"), stdin=b"x")
    assert proc.returncode == 78
    assert b"nope.keys" in proc.stderr and b"No such file" in proc.stderr, proc.stderr


def test_group_readable_keys_file_warns_but_works(tmp_path):
    key = Fernet.generate_key()
    kf = keys_file(tmp_path, key, mode=0o644)
    proc = ctl("encrypt", "--keys-file", kf, stdin=b"x", check=0)
    assert b"warning" in proc.stderr and b"readable by" in proc.stderr, proc.stderr
    assert key not in proc.stderr
    assert Fernet(key).decrypt(proc.stdout.strip()) == b"x"
    strict = keys_file(tmp_path, key, name="strict.keys", mode=0o600)
    assert ctl("encrypt", "--keys-file", strict, stdin=b"x", check=0).stderr == b""


@pytest.mark.parametrize("args", [
    ("encrypt", "--bogus"),
    ("encrypt", "extra-argument"),
    ("decrypt", "--keys-file"),
    ("decrypt", "-x"),
    ("keygen", "--keys-file", "f"),
    ("keygen", "extra"),
])
def test_bad_command_lines_exit_64(tmp_path, args):
    proc = ctl(*args, stdin=b"")
    assert proc.returncode == 64, f"{args}: expected exit 64, saw {proc.returncode}"
    assert proc.stdout == b""
    assert proc.stderr.strip()


def test_help_exits_0(tmp_path):
    for cmd in ("keygen", "encrypt", "decrypt"):
        proc = ctl(cmd, "--help", check=0)
        assert b"Usage" in proc.stdout


def test_oversized_input_is_refused(tmp_path):
    kf = keys_file(tmp_path, Fernet.generate_key())
    proc = ctl("encrypt", "--keys-file", kf, stdin=b"\0" * (16 * 1024 * 1024 + 1))
    assert proc.returncode == 1 and proc.stdout == b""
    assert b"larger than" in proc.stderr, proc.stderr
    # exactly the cap is still fine
    proc = ctl("encrypt", "--keys-file", kf, stdin=b"\0" * (16 * 1024 * 1024), check=0)
    assert len(proc.stdout) > 16 * 1024 * 1024


def test_without_keys_file_a_broken_config_exits_78(tmp_path):
    # No --keys-file: the key list comes from the configuration, which is missing.
    proc = subprocess.run([str(CTL), "-c", str(tmp_path / "missing.conf"), "encrypt"],
                          input=b"x", capture_output=True, timeout=60)
    assert proc.returncode == 78, f"expected exit 78, saw {proc.returncode}: {proc.stderr!r}"
    assert proc.stdout == b""
    assert proc.stderr.strip()


def test_keys_file_mode_is_not_changed(tmp_path):
    kf = keys_file(tmp_path, Fernet.generate_key(), mode=0o400)
    ctl("encrypt", "--keys-file", kf, stdin=b"x", check=0)
    assert stat.S_IMODE(os.stat(kf).st_mode) == 0o400


def test_without_keys_file_the_configured_key_list_is_used(tmp_path):
    k1, k2 = Fernet.generate_key(), Fernet.generate_key()
    keys_file(tmp_path, k1, k2, name="fernet.keys")
    conf = tmp_path / "oauth-refreshd.conf"
    conf.write_text("[crypto]\nkeys_file = fernet.keys\n")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}

    def run(*args, stdin):
        return subprocess.run([str(CTL), "-c", str(conf), *args], input=stdin,
                              capture_output=True, timeout=60, env=env)

    enc = run("encrypt", stdin=b"from config")
    assert enc.returncode == 0, enc.stderr
    assert Fernet(k1).decrypt(enc.stdout.strip()) == b"from config"
    dec = run("decrypt", stdin=Fernet(k2).encrypt(b"old key"))
    assert dec.returncode == 0 and dec.stdout == b"old key", dec.stderr
    # A configured key file that does not parse is a configuration error.
    (tmp_path / "fernet.keys").write_bytes(b"not-a-key\n")
    bad = run("encrypt", stdin=b"x")
    assert bad.returncode == 78, f"expected exit 78, saw {bad.returncode}: {bad.stderr!r}"
    assert bad.stdout == b"" and b"not a valid Fernet key" in bad.stderr, bad.stderr
