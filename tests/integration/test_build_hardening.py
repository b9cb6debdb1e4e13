"""The binaries are built the way a daemon that holds keys and tokens should be (CMake's
OAUTH_HARDEN, on by default): a position-independent executable, full RELRO (read-only
relocations, bound at start), stack-protector canaries, and FORTIFY_SOURCE's checked libc
calls in optimised builds. Read off the ELF files with binutils, as hardening-check does."""

import os
import re
import subprocess

import pytest

from lib.daemon import build_dir, ctl_path, daemon_path

BINARIES = [daemon_path(), ctl_path()]


def cache(name):
    with open(os.path.join(build_dir(), "CMakeCache.txt")) as f:
        m = re.search(rf"^{name}:\w+=(.*)$", f.read(), re.M)
    return m.group(1) if m else None


def run(*argv):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("binary", BINARIES, ids=os.path.basename)
def test_binary_is_pie_with_full_relro(binary):
    assert "DYN (Position-Independent Executable file)" in run("readelf", "-h", binary), \
        f"{binary} is not a PIE"
    assert re.search(r"^\s*GNU_RELRO\b", run("readelf", "-lW", binary), re.M), \
        f"{binary} has no RELRO segment"
    dyn = run("readelf", "-d", binary)
    assert re.search(r"\(FLAGS\)\s+BIND_NOW", dyn) or re.search(r"FLAGS_1\).*\bNOW\b", dyn), \
        f"{binary} is not linked with -z now (partial RELRO only)"


@pytest.mark.parametrize("binary", BINARIES, ids=os.path.basename)
def test_binary_has_stack_protector_and_fortified_calls(binary):
    imports = run("nm", "-D", "--undefined-only", binary)
    assert "__stack_chk_fail" in imports, f"{binary} has no stack-protector canaries"
    if cache("CMAKE_BUILD_TYPE") == "Debug" or cache("OAUTH_SANITIZE") == "ON":
        pytest.skip("FORTIFY_SOURCE needs an optimised build without sanitizers")
    fortified = re.findall(r"__\w+_chk\b", imports)
    assert len(set(fortified) - {"__stack_chk_fail"}) >= 3, \
        f"{binary} calls no FORTIFY_SOURCE-checked functions: {fortified}"
