"""Memory safety of the real daemon under valgrind (issue 5, "Fuzzing and memory safety").

`oauth-refreshd --once` runs under `valgrind --leak-check=full --error-exitcode=99` over a
small seeded run — every provider, successes, a revocation, a bad answer and an
undecryptable row — and valgrind must report no errors and no leaked blocks (definitely or
indirectly lost). Skipped cleanly when valgrind is not installed, or when the build under
test is a sanitizer build (ASan and valgrind cannot run together).
"""

import base64
import os
import re
import shutil

import pytest
from cryptography.fernet import Fernet

from lib.daemon import sanitizer_build
from lib.spoolfmt import spool_line, spool_tag

VALGRIND = shutil.which("valgrind")
VALGRIND_ERROR_EXIT = 99


pytestmark = [
    pytest.mark.skipif(VALGRIND is None, reason="valgrind is not installed"),
    pytest.mark.skipif(sanitizer_build(), reason="sanitizer build: valgrind cannot run ASan binaries"),
]


def run_under_valgrind(env, monkeypatch, tmp_path, name):
    vg_log = tmp_path / f"valgrind-{name}.log"
    monkeypatch.setenv("OAUTH_TEST_WRAPPER", " ".join([
        VALGRIND, "--leak-check=full", "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite,indirect", f"--error-exitcode={VALGRIND_ERROR_EXIT}",
        "--track-origins=yes", "--num-callers=30", f"--log-file={vg_log}"]))
    rc, log = env.run_once(timeout=600)
    report = vg_log.read_text(errors="replace") if vg_log.exists() else ""
    return rc, log, report


def assert_valgrind_clean(rc, log, report, expected_rc):
    assert rc != VALGRIND_ERROR_EXIT, (
        f"valgrind found errors or leaks (exit {rc}); report:\n{report[-12000:]}")
    assert rc == expected_rc, (
        f"expected oauth-refreshd --once to exit {expected_rc}, saw {rc}\n{log[-3000:]}\n{report[-4000:]}")
    assert "HEAP SUMMARY" in report, (
        f"valgrind did not run the daemon (no HEAP SUMMARY in its log):\n{report[-4000:]}\n{log[-2000:]}")
    m = re.search(r"ERROR SUMMARY: ([\d,]+) errors", report)
    assert m is not None and m.group(1) == "0", f"valgrind errors:\n{report[-12000:]}"
    for kind in ("definitely lost", "indirectly lost"):
        m = re.search(kind + r": ([\d,]+) bytes", report)
        assert m is None or m.group(1) == "0", f"valgrind: {kind}: {m.group(1)} bytes\n{report[-12000:]}"
    assert "Invalid read" not in report and "Invalid write" not in report, report[-12000:]
    assert "uninitialised" not in report, report[-12000:]


def test_once_run_of_every_provider_is_valgrind_clean(
        migrated_env, seeder, token_server, monkeypatch, tmp_path):
    accts = [seeder.add_account(p, expires_in=-60) for p in ("google", "github", "microsoft")
             for _ in range(2)]
    revoked = seeder.add_account("github", expires_in=-60)
    token_server.revoke(revoked.account_key)
    later = seeder.add_account("google", expires_in=7200)

    rc, log, report = run_under_valgrind(migrated_env, monkeypatch, tmp_path, "clean")
    assert_valgrind_clean(rc, log, report, expected_rc=0)
    for a in accts:
        assert token_server.refresh_count(a.account_key) == 1, f"account {a.id} not refreshed"
        assert seeder.read(a.id)["access_token"] == token_server.issued_access_tokens(a.account_key)[-1]
    assert token_server.requests_for(later.account_key) == []


def test_once_run_with_failures_is_valgrind_clean(
        migrated_env, seeder, token_server, monkeypatch, tmp_path):
    bad_json = seeder.add_account("google", expires_in=-60)
    token_server.inject("not_json", provider="google", account=bad_json.account_key, count=1)
    oversized = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("huge_body", provider="microsoft", account=oversized.account_key,
                        count=1, size=200 * 1024)
    foreign = Fernet(Fernet.generate_key()).encrypt(b"rt-foreign").decode()
    seeder.add_account("github", expires_in=-60, raw={"refresh_token": foreign})
    defaulted = seeder.add_account("github", expires_in=-60)
    token_server.inject("missing_expires_in", provider="github", account=defaulted.account_key,
                        count=1)
    ok = seeder.add_account("microsoft", expires_in=-60, scope=None)

    rc, log, report = run_under_valgrind(migrated_env, monkeypatch, tmp_path, "failures")
    assert_valgrind_clean(rc, log, report, expected_rc=1)
    assert token_server.refresh_count(ok.account_key) == 1
    assert token_server.refresh_count(defaulted.account_key) == 1


def test_replay_of_a_damaged_spool_is_valgrind_clean(
        migrated_env, seeder, token_server, fernet_keys, monkeypatch, tmp_path):
    """A spool entry that verifies but is not a result (and one that does not verify) is
    reported without touching uninitialised memory (spool.c's replay message buffer)."""
    spool = os.path.join(migrated_env.state_dir, "spool")
    os.makedirs(spool, mode=0o700, exist_ok=True)
    seg = os.path.join(spool, "seg-%020d.spool" % 1)
    with open(seg, "w") as f:
        f.write(fernet_keys.encrypt('{"account_id": "x"}') + "\n")  # verifies, not a result
        f.write("not a token at all\n")
        f.write(fernet_keys.encrypt("not json") + "\n")
        # The current format: a line whose tag verifies but whose provider does not exist,
        # and one whose tag does not verify.
        raw = base64.urlsafe_b64decode(fernet_keys.primary)
        body = "S2 5 9 1795800000000000 gAAAAAa gAAAAAb gAAAAAc - - - "
        f.write(body + spool_tag(raw, body) + "\n")
        f.write(spool_line(b"\x02" * 32, 6, 1, 1795800000000000, "gAAAAAa", "gAAAAAb", "gAAAAAc"))
    a = seeder.add_account("github", expires_in=-60)

    rc, log, report = run_under_valgrind(migrated_env, monkeypatch, tmp_path, "spool")
    assert_valgrind_clean(rc, log, report, expected_rc=0)
    assert "not a valid result" in log and "does not verify" in log, log[-3000:]
    assert os.path.exists(seg + ".bad"), "the damaged segment is kept aside for the operator"
    assert token_server.refresh_count(a.account_key) == 1
