"""Running the real binaries of the build under test.

Owns: writing a daemon config (SPEC §3) that points at a per-test database, the
token server, a Fernet keys file and client secret files, all in one temp dir;
running $OAUTH_BUILD_DIR/oauth-refreshd (--once or continuous) and
oauth-refreshctl as subprocesses with their output in log files; signals, waits
and log access. $OAUTH_TEST_WRAPPER (e.g. "valgrind --error-exitcode=99 ...")
prefixes the daemon's command line when set.
Must never: leave a process running after its test (teardown kills them), or
hide a log: a test that fails gets the tail of every daemon log printed.
"""

import os
import re
import shlex
import signal
import subprocess
import time

PROVIDERS = ("google", "github", "microsoft")


def build_dir():
    d = os.environ.get("OAUTH_BUILD_DIR")
    if d:
        return d
    return os.path.join(source_dir(), "build")


def source_dir():
    d = os.environ.get("OAUTH_SOURCE_DIR")
    if d:
        return d
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def daemon_path():
    return os.path.join(build_dir(), "oauth-refreshd")


def ctl_path():
    return os.path.join(build_dir(), "oauth-refreshctl")


def sanitizer_build(build=None):
    """True when the binaries in build (default: the build under test) carry ASan/UBSan or
    the fuzzing instrumentation: valgrind cannot run them."""
    build = build or build_dir()
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            text = f.read()
    except OSError:
        text = ""
    if re.search(r"^OAUTH_(SANITIZE|FUZZ):BOOL=(ON|1|TRUE|YES)$", text, re.M | re.I):
        return True
    try:
        with open(os.path.join(build, "oauth-refreshd"), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def clean_env(extra=None):
    """The environment the binaries run in: ours, minus systemd's hand-offs so that logs go
    to stderr and no notify socket is used unless a test sets one."""
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY",
              "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(k, None)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:print_stacktrace=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


def render_ini(sections):
    """sections: {name: {key: value}} in order; value None omits the key, a section of None
    omits the section."""
    out = []
    for name, keys in sections.items():
        if keys is None:
            continue
        out.append(f"[{name}]")
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "yes" if v else "no"
            out.append(f"{k} = {v}")
        out.append("")
    return "\n".join(out)


def _write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


class DaemonEnv:
    """Everything one test's daemon(s) need, in dir: config, keys, secrets, state, logs."""

    def __init__(self, dir, dsn, keys, token_server=None, ca_file=None, providers=PROVIDERS,
                 clients=None):
        self.dir = dir
        self.dsn = dsn
        self.keys = keys
        self.server = token_server
        self.ca_file = ca_file
        self.providers = tuple(providers)
        self.clients = clients or (dict(token_server.clients) if token_server else {
            p: (f"test-{p}-client", f"test-{p}-secret") for p in PROVIDERS})
        self.config_path = os.path.join(dir, "oauth-refreshd.conf")
        self.state_dir = os.path.join(dir, "state")
        self.keys_file = os.path.join(dir, "fernet.keys")
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        keys.write(self.keys_file)
        self.daemons = []
        self._n = 0
        self.write_config()

    def sections(self):
        """The default config as a dict of sections, for tests that want to adjust it."""
        s = {
            "daemon": {"log_level": "debug", "state_directory": self.state_dir,
                       "shutdown_timeout": "5s"},
            "database": {"conninfo": self.dsn},
            "crypto": {"keys_file": self.keys_file},
            "refresh": {"lead_time": "5min", "jitter": "0", "scan_interval": "1min",
                        "batch_size": 500, "max_in_flight": 512, "request_timeout": "10s",
                        "retry_min": "1s", "retry_max": "10min"},
            "http": {"ca_file": self.ca_file},
        }
        for p in self.providers:
            cid, secret = self.clients[p]
            secret_file = os.path.join(self.dir, f"{p}.secret")
            _write_secret(secret_file, secret)
            sec = {"client_id": cid, "client_secret_file": secret_file}
            if self.server is not None:
                sec["token_url"] = self.server.token_url(p, tenant=None)
            if p == "microsoft":
                sec["tenant"] = "common"
            s[f"provider.{p}"] = sec
        return s

    def write_config(self, overrides=None, text=None, path=None):
        """Writes the config. overrides: {section: {key: value-or-None}} merged into the
        defaults ({section: None} drops a section); text: write this verbatim instead."""
        path = path or self.config_path
        if text is None:
            s = self.sections()
            for name, keys in (overrides or {}).items():
                if keys is None:
                    s.pop(name, None)
                else:
                    s.setdefault(name, {}).update(keys)
            text = render_ini(s)
        with open(path, "w") as f:
            f.write(text)
        return path

    def config_text(self):
        with open(self.config_path) as f:
            return f.read()

    def daemon(self, name=None, config=None, env=None):
        """A new (not yet started) daemon runner using this env's config."""
        self._n += 1
        d = Daemon(config or self.config_path, os.path.join(self.dir, f"{name or 'daemon'}-{self._n}.log"),
                   env=env)
        self.daemons.append(d)
        return d

    def run_once(self, timeout=120, args=(), env=None):
        """oauth-refreshd --once; returns (returncode, log text)."""
        return self.daemon("once", env=env).run_once(timeout=timeout, args=args)

    def check_config(self, timeout=30, config=None):
        return self.daemon("check", config=config).run(["--check-config"], timeout=timeout)

    def ctl(self, *args, input=None, timeout=60, config=True, env=None):
        """Runs oauth-refreshctl [-c CONFIG] ARGS; returns CompletedProcess (stdout bytes,
        stderr text)."""
        return run_ctl(*args, config=self.config_path if config is True else config,
                       input=input, timeout=timeout, env=env)

    def migrate(self):
        p = self.ctl("migrate")
        assert p.returncode == 0, (f"oauth-refreshctl migrate: expected exit 0, saw "
                                   f"{p.returncode}; stderr:\n{p.stderr}")
        return p

    def cleanup(self, dump_logs=False):
        for d in self.daemons:
            d.kill()
        if dump_logs:
            for d in self.daemons:
                print(f"----- {d.log_path} (exit {d.returncode}) -----")
                print(d.log_tail(80))


def run_ctl(*args, config=None, input=None, timeout=60, env=None):
    argv = [ctl_path()]
    if config:
        argv += ["-c", config]
    argv += [str(a) for a in args]
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=clean_env(env))
    p.stderr = p.stderr.decode(errors="replace")
    return p


class Daemon:
    """One oauth-refreshd process; stdout and stderr go to log_path."""

    def __init__(self, config, log_path, env=None):
        self.config = config
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.returncode = None

    def argv(self, args=()):
        wrapper = shlex.split(os.environ.get("OAUTH_TEST_WRAPPER", ""))
        return wrapper + [daemon_path(), "-c", self.config] + [str(a) for a in args]

    def start(self, args=()):
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(args), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=clean_env(self.env),
                                     start_new_session=True)
        self.returncode = None
        return self

    def run(self, args=(), timeout=120):
        """Runs to completion; returns (returncode, log text). Kills it on timeout and fails."""
        self.start(args)
        try:
            rc = self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"oauth-refreshd {' '.join(map(str, args))} did not exit within "
                                 f"{timeout}s; log tail:\n{self.log_tail()}")
        return rc, self.log()

    def run_once(self, timeout=120, args=()):
        return self.run(["--once", *args], timeout=timeout)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def terminate(self, timeout=30):
        """SIGTERM and wait; returns the exit status."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout=None):
        self.returncode = self.proc.wait(timeout)
        if not self._log.closed:
            self._log.close()
        return self.returncode

    def kill(self):
        """SIGKILL (no-op when not running)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.returncode = self.proc.returncode
        if not self._log.closed:
            self._log.close()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_for_log(self, pattern, timeout=30, after=0):
        """Waits until the log (from offset `after`) matches the regex; returns the match.
        Fails early if the daemon exits."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log()[after:])
            if m:
                return m
            if not self.running():
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before logging "
                                     f"/{pattern}/; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"expected the log to match /{pattern}/ within {timeout}s; "
                                     f"log tail:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_size(self):
        return len(self.log())


def wait_until(pred, timeout=30, interval=0.05, message="condition"):
    """Polls pred() until truthy; returns its value or fails saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
