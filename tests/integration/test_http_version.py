"""[http] http_version: the daemon really speaks the HTTP version it is told to.

The token endpoint is the benchmark's nginx (bench/lib: one port offering HTTP/2
and HTTP/1.1 through ALPN, as real providers do), with an access log of each
request's protocol. `oauth-refreshd --once` refreshes a few accounts with the
default (HTTP/2) and with `http_version = 1.1`; nginx's log must show only that
protocol. Needs Debian's nginx (nginx-light); without it the test is skipped.
"""

import os
import shutil
import sys

import pytest

from lib.daemon import build_dir, source_dir

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
N = 30


def bench_world():
    sys.path.insert(0, os.path.join(source_dir(), "bench", "lib"))
    os.environ.setdefault("OAUTH_BUILD_DIR", build_dir())
    from world import World  # noqa: E402  (bench/lib, imported only when nginx exists)
    return World(access_log=True)


def protocols(log_path):
    with open(log_path) as f:
        return [line.split()[0] for line in f if line.strip()]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: nginx-light)")
@pytest.mark.parametrize("setting,expected", [(None, "HTTP/2.0"), ("2", "HTTP/2.0"),
                                              ("1.1", "HTTP/1.1")])
def test_daemon_speaks_the_configured_http_version(setting, expected):
    w = bench_world()
    try:
        w.new_database("httpver")
        env = w.make_env(kind="h2", max_in_flight=16, http_version=setting)
        w.seed(N, "now() - interval '1 minute'")
        w.migrate()
        before = len(protocols(w.nginx.access_log)) if os.path.exists(w.nginx.access_log) else 0
        rc, log = env.run_once(timeout=60)
        assert rc == 0, f"expected --once to exit 0, saw {rc}; log:\n{log[-3000:]}"
        seen = protocols(w.nginx.access_log)[before:]
        assert len(seen) == N, f"expected {N} requests in nginx's log, saw {len(seen)}: {seen[:5]}"
        assert set(seen) == {expected}, (
            f"http_version = {setting}: expected every request over {expected}, saw "
            f"{sorted(set(seen))}")
        done = w.db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                           "WHERE last_refreshed_at IS NOT NULL")
        assert done == N, f"expected {N} accounts refreshed, saw {done}"
    finally:
        w.destroy()
