"""The benchmark (bench/run) still runs: a tiny --once pass, so that it cannot rot.

Runs bench/lib/bench.py (what bench/run executes after building) against the
build under test with 300 accounts and no ceiling measurements, then the Python
peer (bench/peer/refresher.py) on the same 300 accounts re-seeded, and checks
that every account was refreshed by each, and that each number of the report and
the daemon/peer ratio are printed.
Needs Debian's nginx (nginx-light) for the token endpoint; without it the test
is skipped and says so.
"""

import os
import re
import shutil
import subprocess

import pytest

from lib.daemon import build_dir, sanitizer_build, source_dir

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: nginx-light)")
def test_benchmark_once_refreshes_every_account_and_reports_each_number():
    argv = ["/usr/bin/python3", os.path.join(source_dir(), "bench", "lib", "bench.py"), "once",
            "peer", "instructions", "--accounts", "300", "--repeat", "2",
            "--instructions-accounts", "100", "--skip-ceilings", "--build-dir", build_dir()]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=170)
    out = p.stdout
    assert p.returncode == 0, f"expected bench.py to exit 0, saw {p.returncode}; output:\n{out}"
    m = re.search(r"oauth-refreshd --once: exit (\d+); ([\d,]+) refreshed, (\d+) failed", out)
    assert m, f"expected the --once result line; output:\n{out}"
    assert (m.group(1), m.group(2), m.group(3)) == ("0", "300", "0"), (
        f"expected exit 0, 300 refreshed, 0 failed; saw {m.group(0)!r}")
    for what in (r"throughput\s+[\d,]+ refreshes/s", r"µs per refresh", r"peak RSS\s+[\d.]+ MB",
                 r"claim to written", r"claim_due\(\)\s+\d+ calls", r"store_refreshed\(\)",
                 r"EXPLAIN ANALYZE of the claim", r"Index Scan (using|on) account_state_(due|claim)_idx",
                 r"== targets =="):
        assert re.search(what, out), f"expected /{what}/ in the report; output:\n{out}"
    assert "rows marked refreshed 300 " in out, f"expected 300 rows refreshed in the database; output:\n{out}"
    m = re.search(r"oauth-refreshd --once \(run 2\): exit (\d+); ([\d,]+) refreshed, (\d+) failed", out)
    assert m and (m.group(1), m.group(2), m.group(3)) == ("0", "300", "0"), (
        f"expected a second run on a fresh database, 300 refreshed; output:\n{out}")
    for what in (r"-- 2 runs: median \(min-max\) --", r"daemon CPU\s+[\d.]+ µs per refresh \([\d.]+-[\d.]+\)",
                 r"median of 2 runs: daemon <= 90 µs"):
        assert re.search(what, out), f"expected /{what}/ in the report; output:\n{out}"
    if sanitizer_build():  # valgrind cannot run an ASan binary: the phase says so
        expect = (r"== instructions: skipped: .* is a sanitizer build",)
    else:
        expect = (r"run under callgrind: exit 0, 100 refreshed; [\d,]+ instructions, [\d,]+ per refresh",
                  r"daemon instructions per refresh \(callgrind, 100 refreshes\): [\d,]+")
    for what in expect:
        assert re.search(what, out), f"expected /{what}/ in the report; output:\n{out}"
    m = re.search(r"python peer --once: exit (\d+); ([\d,]+) refreshed, (\d+) failed", out)
    assert m, f"expected the peer's result line; output:\n{out}"
    assert (m.group(1), m.group(2), m.group(3)) == ("0", "300", "0"), (
        f"expected the peer to exit 0 with 300 refreshed, 0 failed; saw {m.group(0)!r}")
    assert "rows marked refreshed 300 " in out.split("python peer --once")[1], (
        f"expected the peer's 300 rows refreshed in the database; output:\n{out}")
    for what in (r"peer CPU\s+[\d.]+s user .* = [\d.]+ µs per refresh",
                 r"peer peak RSS\s+[\d.]+ MB",
                 r"daemon / peer\s+refreshes/s [\d.]+x; own CPU per refresh [\d.]+x"):
        assert re.search(what, out), f"expected /{what}/ in the report; output:\n{out}"
