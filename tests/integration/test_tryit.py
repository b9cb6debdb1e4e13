"""The README's try-it command end to end: it prepares everything, checks the generated
config, runs the daemon with a live view, stops it cleanly and reports that the demo
accounts were refreshed (issue 2, issue 7)."""

import os
import subprocess

from lib.daemon import build_dir, source_dir


def test_try_it_refreshes_the_demo_accounts_and_cleans_up():
    env = dict(os.environ, TRYIT_SECONDS="12", OAUTH_BUILD_DIR=build_dir())
    p = subprocess.run([os.path.join(source_dir(), "scripts", "try-it")], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    out = p.stdout
    assert p.returncode == 0, f"try-it exited {p.returncode}:\n{out[-4000:]}"
    for expected in ("configuration OK", "oauth-refreshctl migrate: done",
                     "try-it: live: ", "oauth-refreshd stopped cleanly",
                     "double-refresh/stale-token violations: 0", "cleaning up"):
        assert expected in out, f"try-it output lacks {expected!r}:\n{out[-4000:]}"
    # The live view shows refreshes per provider.
    live = [line for line in out.splitlines() if line.startswith("try-it: live: ")]
    assert any("google" in line and "github" in line and "microsoft" in line for line in live)
