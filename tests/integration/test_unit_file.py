"""The shipped unit file (SPEC §7; issue 4 "The unit file"): it verifies cleanly as
installed (systemd-analyze verify prints nothing), its sandbox exposure is at most 1.5,
and it keeps the settings operators and the daemon rely on."""

import os
import re
import shutil
import subprocess

import pytest

from lib.daemon import build_dir, source_dir

UNIT = "oauth-refreshd.service"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory):
    """`cmake --install` of the build under test into a root with prefix /usr, plus what
    verify looks at outside the package: systemd's own units and /bin/kill."""
    root = str(tmp_path_factory.mktemp("root"))
    env = dict(os.environ, DESTDIR=root)
    p = subprocess.run(["cmake", "--install", build_dir(), "--prefix", "/usr"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, f"cmake --install failed:\n{p.stdout}"
    unit = os.path.join(root, "usr/lib/systemd/system", UNIT)
    assert os.path.isfile(unit), f"{UNIT} is not installed under /usr/lib/systemd/system"
    for d in ("bin", "sbin", "lib"):
        if not os.path.lexists(os.path.join(root, d)):
            os.symlink(f"usr/{d}", os.path.join(root, d))
    host_units = "/usr/lib/systemd/system" if os.path.isdir("/usr/lib/systemd/system/") \
        else "/lib/systemd/system"
    for name in os.listdir(host_units):
        src = os.path.join(host_units, name)
        dst = os.path.join(root, "usr/lib/systemd/system", name)
        if name != UNIT and not os.path.lexists(dst) and os.path.isfile(src) \
                and not os.path.islink(src):
            shutil.copy(src, dst)
    kill = shutil.which("kill", path="/usr/bin:/bin")
    assert kill, "kill(1) is needed by ExecReload="
    os.makedirs(os.path.join(root, "usr/bin"), exist_ok=True)
    shutil.copy(kill, os.path.join(root, "usr/bin/kill"))
    return root


def verify(root, unit_path):
    p = subprocess.run([ANALYZE, "verify", "--man=no", f"--root={root}", unit_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return p.returncode, p.stdout


def test_installed_unit_verifies_without_a_word(installed_root):
    rc, out = verify(installed_root, os.path.join(installed_root, "usr/lib/systemd/system", UNIT))
    assert out.strip() == "", f"systemd-analyze verify must print nothing, it printed:\n{out}"
    assert rc == 0


def test_verify_check_catches_a_typo(installed_root):
    """The check above can fail: the same unit with a misspelt setting is reported."""
    units = os.path.join(installed_root, "usr/lib/systemd/system")
    with open(os.path.join(units, UNIT)) as f:
        text = f.read()
    bad = os.path.join(units, "oauth-refreshd-typo.service")
    with open(bad, "w") as f:
        f.write(text.replace("NoNewPrivileges=", "NoNewPrivilege="))
    try:
        rc, out = verify(installed_root, bad)
    finally:
        os.unlink(bad)
    assert "NoNewPrivilege" in out, f"a typo must be reported, saw:\n{out}"


def test_security_exposure_is_at_most_1_5():
    unit = os.path.join(source_dir(), "systemd", UNIT)
    p = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=15", "--no-pager",
                        unit], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, f"no exposure level in:\n{p.stdout[-2000:]}"
    level = float(m.group(1))
    assert level <= 1.5, f"exposure must be <= 1.5, saw {level}:\n{p.stdout}"
    assert p.returncode == 0, f"--threshold=15 must pass, exit {p.returncode}:\n{p.stdout[-2000:]}"
    print(f"exposure {level}")


def unit_settings():
    settings = {}
    with open(os.path.join(source_dir(), "systemd", UNIT)) as f:
        text = f.read()
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        settings.setdefault((section, k), []).append(v)
    return settings, text


def test_unit_keeps_the_settings_the_daemon_relies_on():
    s, text = unit_settings()

    def one(key, section="Service"):
        v = s.get((section, key))
        assert v, f"[{section}] {key}= is missing"
        return v[-1]

    assert one("Type") == "notify"
    assert "notify-reload" in text, "a comment notes Type=notify-reload for systemd >= 253"
    assert one("NotifyAccess") == "main"
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", one("ExecReload")), one("ExecReload")
    assert re.fullmatch(r"\d+(s|min)?", one("WatchdogSec")), one("WatchdogSec")
    assert one("Restart") == "on-failure"
    assert one("RestartPreventExitStatus") == "78"
    assert one("DynamicUser") == "yes"
    assert one("StateDirectory") == "oauth-refreshd"
    assert one("ExecStart").startswith("/usr/sbin/oauth-refreshd ")
    creds = {v.split(":", 1)[0] for v in s.get(("Service", "LoadCredential"), [])}
    assert {"fernet.keys", "google.secret", "github.secret", "microsoft.secret"} <= creds, creds
    stop = one("TimeoutStopSec")
    # The longest drain (issue 10 part 6): requests in flight are waited for up to their own
    # request_timeout (+1 s), then the store has 5 s; defaults shutdown_timeout 20s,
    # request_timeout 30s.
    drain = max(20, 30 + 1) + 5
    m = re.fullmatch(r"(\d+)(s|min)?", stop)
    assert m, stop
    stop_s = int(m.group(1)) * (60 if m.group(2) == "min" else 1)
    assert stop_s > drain, (
        f"TimeoutStopSec={stop} must cover the longest drain with the defaults ({drain}s)")
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateDevices", "PrivateTmp",
                "ProtectHome", "RestrictAddressFamilies", "SystemCallFilter",
                "MemoryDenyWriteExecute", "CapabilityBoundingSet"):
        assert (("Service", key)) in s, f"sandbox setting {key}= is missing"


def test_example_config_names_its_secrets_as_the_unit_loads_them():
    """Relative *_file names in the example config resolve in $CREDENTIALS_DIRECTORY, so
    they must be exactly the credential ids the unit loads."""
    s, _ = unit_settings()
    creds = {v.split(":", 1)[0] for v in s.get(("Service", "LoadCredential"), [])}
    with open(os.path.join(source_dir(), "conf", "oauth-refreshd.conf")) as f:
        conf = f.read()
    files = set(re.findall(r"^\s*(?:keys_file|client_secret_file)\s*=\s*(\S+)", conf, re.M))
    assert files, "the example config names its secret files"
    assert all("/" not in f for f in files), f"secret file names must be relative: {files}"
    assert files <= creds, f"example config names {files - creds} that the unit does not load"
