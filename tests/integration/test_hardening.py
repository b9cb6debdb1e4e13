"""Both binaries keep the keys and tokens they hold out of core files (issue 10 part 5).

The processes run as an unprivileged user (nobody) started with core dumps allowed
(RLIMIT_CORE raised to its hard limit) so that what is checked is what the binary did
to itself: /proc/PID/limits shows "Max core file size 0 0", and the files in /proc/PID
(status, mem, ...) are owned by root although the process runs as nobody, which the kernel does only for a process
that is not dumpable (prctl PR_SET_DUMPABLE 0). A plain `sleep` started the same way
is the control: its /proc/PID/status stays nobody's.
"""

import os
import resource
import shutil
import subprocess
import tempfile
import time

import pytest

from lib.daemon import DaemonEnv, clean_env, ctl_path, daemon_path, wait_until

NOBODY = 65534


def _as_nobody(argv):
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def _allow_cores():
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _core_limits(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    raise AssertionError(f"no core line in /proc/{pid}/limits")


def _proc_owner(pid):
    return os.stat(f"/proc/{pid}/status").st_uid


@pytest.fixture
def nobody_dir():
    d = tempfile.mkdtemp(prefix="oauth-harden-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _chown_tree(path, uid):
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, uid)
        for n in files:
            os.chown(os.path.join(root, n), uid, uid)


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_control_a_process_started_this_way_is_dumpable_and_may_dump_core():
    p = subprocess.Popen(_as_nobody(["sleep", "30"]), preexec_fn=_allow_cores)
    try:
        wait_until(lambda: _proc_owner(p.pid) == NOBODY, timeout=10, message="sleep runs as nobody")
        assert _core_limits(p.pid) != ["0", "0"]
    finally:
        _stop(p)


def test_oauth_refreshctl_decrypt_is_not_dumpable_and_has_no_core_limit(nobody_dir, fernet_keys):
    keys = fernet_keys.write(os.path.join(nobody_dir, "fernet.keys"))
    _chown_tree(nobody_dir, NOBODY)
    # decrypt blocks reading stdin after it has loaded the keys: look at it then.
    p = subprocess.Popen(_as_nobody([ctl_path(), "decrypt", "--keys-file", keys]),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(), preexec_fn=_allow_cores)
    try:
        time.sleep(0.5)
        assert p.poll() is None, p.stderr.read().decode(errors="replace")
        assert _core_limits(p.pid) == ["0", "0"]
        assert _proc_owner(p.pid) == 0, "/proc/PID/status stays nobody's: the process is dumpable"
        out, err = p.communicate(fernet_keys.encrypt("a token").encode(), timeout=30)
        assert p.returncode == 0, err
        assert out == b"a token"
    finally:
        _stop(p)


def test_oauth_refreshd_is_not_dumpable_and_has_no_core_limit(nobody_dir, migrated_env, pki):
    env = DaemonEnv(nobody_dir, migrated_env.dsn, migrated_env.keys,
                    token_server=migrated_env.server, ca_file=pki.ca_file)
    ca = shutil.copy(pki.ca_file, os.path.join(nobody_dir, "ca.pem"))
    env.write_config({"http": {"ca_file": ca}})
    _chown_tree(nobody_dir, NOBODY)
    log_path = os.path.join(nobody_dir, "daemon.log")
    with open(log_path, "wb") as log:
        p = subprocess.Popen(_as_nobody([daemon_path(), "-c", env.config_path]),
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=clean_env(), preexec_fn=_allow_cores, start_new_session=True)
    try:
        def ready():
            assert p.poll() is None, open(log_path, errors="replace").read()
            return "ready" in open(log_path, errors="replace").read()
        wait_until(ready, timeout=30, message="the daemon reports ready")
        assert _core_limits(p.pid) == ["0", "0"]
        assert _proc_owner(p.pid) == 0, "/proc/PID/status stays nobody's: the daemon is dumpable"
    finally:
        _stop(p)


# ------------------------------------------------ TLS record buffers are wiped

def test_token_endpoint_connections_cleanse_tls_plaintext(token_server, pki, oauth_build_dir):
    """Every TLS context the http adapter makes for a token endpoint connection gets
    SSL_OP_CLEANSE_PLAINTEXT (counted by the adapter's CURLOPT_SSL_CTX_FUNCTION after
    reading the option back from the context), and requests still complete."""
    import json
    probe = os.path.join(oauth_build_dir, "tests", "tools", "http_probe")
    p = subprocess.run([probe, "--quiet", "-n", "4", "-c", "2", "--ca-file", pki.ca_file,
                        token_server.token_url("google", tenant=None)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, env=clean_env())
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    summary = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert summary["completed"] == 4 and summary["transport_errors"] == 0, summary
    assert summary["tls_cleansing_contexts"] >= 1, summary


# ------------------------------------------ database errors are logged redacted

def test_a_failed_write_back_logs_no_row_values(migrated_env, seeder, db):
    """A CHECK constraint that refuses every update of oauth_accounts makes the write-back
    fail with a DETAIL that echoes the whole new row, Fernet ciphertexts of the tokens
    included ("Failing row contains (..., gAAAAA..., ...)"). The log says which constraint
    refused the write, and carries none of the row."""
    a = seeder.add_account("github", expires_in=-60)
    db.execute("ALTER TABLE oauth_accounts ADD CONSTRAINT frozen_for_test CHECK (false) NOT VALID")
    d = migrated_env.daemon().start()
    try:
        # A data error: the store isolates the result the database refuses, and says so.
        d.wait_for_log(r"the database refuses (its result|the rotated refresh token)", timeout=30)
    finally:
        d.kill()
    log = d.log()
    assert "frozen_for_test" in log, "the reason must still name the constraint"
    assert "Failing row contains" not in log
    assert "gAAAAA" not in log, "a token ciphertext from the DETAIL line reached the log"
    assert a.refresh_token not in log


def test_a_failed_claim_logs_no_row_values(migrated_env, seeder, db):
    """The claim path: a CHECK constraint on the state table refuses the lease update;
    the DETAIL (the failing state row) stays out of the log."""
    seeder.add_account("google", expires_in=-60)
    db.execute("ALTER TABLE oauth_refreshd.account_state "
               "ADD CONSTRAINT frozen_for_test CHECK (false) NOT VALID")
    d = migrated_env.daemon().start()
    try:
        d.wait_for_log(r"claiming due accounts failed", timeout=30)
    finally:
        d.kill()
    log = d.log()
    assert "frozen_for_test" in log, "the reason must still name the constraint"
    assert "Failing row contains" not in log
