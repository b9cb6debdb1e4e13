"""The benchmark's token endpoint: Debian's nginx with a config of its own.

Owns: rendering bench/nginx.conf.in into a temporary directory (ports on
127.0.0.1, the run-time certificate, one static JSON answer per provider in that
provider's dialect, realistic token sizes), starting nginx in the foreground as
our child, waiting until every port accepts, and stopping it.
Must never: listen beyond loopback, touch /etc/nginx or a system nginx, or
outlive the benchmark (an atexit hook stops it).
"""

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(os.path.dirname(HERE), "nginx.conf.in")

_ALNUM = string.ascii_letters + string.digits


def _tok(prefix, n):
    # No '$', quote or backslash: nginx would read them inside the return/echo text.
    return prefix + "".join(secrets.choice(_ALNUM + "-_.") for _ in range(n))


def provider_answers():
    """One success answer per provider, shaped and sized like the real ones
    (PROVIDERS.md): Google has no refresh_token; GitHub and Microsoft rotate it;
    Microsoft returns a JWT-sized access token and an id_token."""
    google = {"access_token": _tok("ya29.", 210), "expires_in": 3599,
              "scope": "openid https://www.googleapis.com/auth/userinfo.email",
              "token_type": "Bearer"}
    github = {"access_token": _tok("ghu_", 36), "expires_in": 28800,
              "refresh_token": _tok("ghr_", 76), "refresh_token_expires_in": 15811200,
              "scope": "", "token_type": "bearer"}
    microsoft = {"token_type": "Bearer", "scope": "openid profile User.Read",
                 "expires_in": 4290, "ext_expires_in": 4290,
                 "access_token": _tok("eyJ0eXAiOiJKV1Qi.", 1400),
                 "refresh_token": _tok("M.C5", 700),
                 "id_token": _tok("eyJ0eXAiOiJKV1Qi.", 900)}
    return {"google": json.dumps(google, separators=(",", ":")),
            "github": json.dumps(github, separators=(",", ":")),
            "microsoft": json.dumps(microsoft, separators=(",", ":"))}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_available():
    return os.path.exists(ECHO_MODULE)


class Nginx:
    def __init__(self, dir, cert, key, workers=2, delay_s=0.2, access_log=False):
        self.dir = dir
        self.cert, self.key = cert, key
        self.workers = workers
        self.delay_s = delay_s
        # The protocol of each request (tests: which HTTP version the daemon spoke);
        # off in the benchmark, where it would cost nginx a write per request.
        self.access_log = os.path.join(dir, "access.log") if access_log else None
        self.h2_port, self.h1_port, self.slow_port = free_port(), free_port(), free_port()
        self.answers = provider_answers()
        self.proc = None
        self.conf = os.path.join(dir, "nginx.conf")
        atexit.register(self.stop)

    def render(self):
        with open(TEMPLATE) as f:
            text = f.read()
        subst = {
            "DIR": self.dir, "CERT": self.cert, "KEY": self.key,
            "H2_PORT": str(self.h2_port), "H1_PORT": str(self.h1_port),
            "SLOW_PORT": str(self.slow_port), "WORKERS": str(self.workers),
            "DELAY": f"{self.delay_s:.3f}",
            "ACCESS_LOG": (f"log_format proto '$server_protocol $status $request_uri';\n"
                           f"    access_log {self.access_log} proto;" if self.access_log
                           else "access_log off;"),
            "LOAD_ECHO": f"load_module {ECHO_MODULE};" if echo_available() else "",
            "READ_BODY": "echo_read_request_body;" if echo_available() else "",
            "ANSWER": "echo -n" if echo_available() else "return 200",
            "USER": "user root root;" if os.geteuid() == 0 else "",
            "GOOGLE_JSON": self.answers["google"], "GITHUB_JSON": self.answers["github"],
            "MICROSOFT_JSON": self.answers["microsoft"],
        }
        for k, v in subst.items():
            text = text.replace(f"@{k}@", v)
        if not echo_available():
            # No echo module: drop the slow server rather than fail the fast benchmark.
            start = text.index("    server {\n        listen 127.0.0.1:" + str(self.slow_port))
            end = text.index("    }\n", text.index("location ~", start)) + 6
            text = text[:start] + text[end:]
            self.slow_port = None
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self, timeout=10):
        self.render()
        self.log = open(os.path.join(self.dir, "nginx.out"), "wb")
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        for port in (self.h2_port, self.h1_port, self.slow_port):
            if port is None:
                continue
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited ({self.proc.returncode}):\n{self.tail()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"nginx did not listen on {port}:\n{self.tail()}")
                    time.sleep(0.05)
        return self

    def tail(self):
        out = []
        for name in ("nginx.out", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append(f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    def base_url(self, kind="h2"):
        port = {"h2": self.h2_port, "h1": self.h1_port, "slow": self.slow_port}[kind]
        return f"https://127.0.0.1:{port}"

    def token_url(self, provider, kind="h2"):
        base = self.base_url(kind)
        return {"google": f"{base}/google/token",
                "github": f"{base}/github/login/oauth/access_token",
                "microsoft": base + "/microsoft/{tenant}/oauth2/v2.0/token"}[provider]

    def worker_pids(self):
        """nginx's worker processes (children of our master), for CPU accounting."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGQUIT)  # graceful stop of master and workers
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        finally:
            self.log.close()
