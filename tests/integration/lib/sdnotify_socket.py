"""Standing in for systemd in tests: a notify socket and a fake journald.

Owns: `NotifySocket`, an AF_UNIX datagram socket (abstract name) that the daemon's
sd_notify() talks to, recording every datagram with its arrival time and the
sender's pid (SO_PASSCRED), as systemd's NotifyAccess=main check would see it;
`FakeJournal`, a datagram socket speaking journald's native protocol, mounted over
/run/systemd/journal in a private mount namespace of the daemon only
(`FakeJournal.wrap_argv`), so sd_journal_sendv() really talks to it; and
`notify_daemon()`, a daemon runner whose environment carries NOTIFY_SOCKET,
WATCHDOG_USEC and a WATCHDOG_PID that is the daemon's own pid (set by the shell
that execs it). Used by tests/integration/test_systemd_notify.py and friends.
Must never: touch the host's real /run/systemd (the namespace is private), or
keep a socket open after the test (close()).
"""

import os
import re
import secrets
import socket
import struct
import threading
import time

from lib.daemon import Daemon


class NotifyMessage:
    def __init__(self, t, pid, raw):
        self.t = t            # time.monotonic() of arrival
        self.pid = pid        # sender (SCM_CREDENTIALS), None if not passed
        self.raw = raw
        self.fields = {}
        for line in raw.split("\n"):
            if "=" in line:
                k, _, v = line.partition("=")
                self.fields[k] = v

    def get(self, key, default=None):
        return self.fields.get(key, default)

    def __contains__(self, key):
        return key in self.fields

    def __repr__(self):
        return f"<notify +{self.t:.3f} pid={self.pid} {self.raw!r}>"


class NotifySocket:
    """A notify socket of the test's own; `env()` gives the daemon's environment."""

    def __init__(self):
        self.name = f"oauth-test-notify-{os.getpid()}-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self._lock = threading.Condition()
        self.messages = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()
        self.on_message = None  # optional callback(msg), run on the receiving thread

    @property
    def address(self):
        return "@" + self.name

    def env(self, watchdog_usec=None):
        e = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec:
            e["WATCHDOG_USEC"] = str(int(watchdog_usec))
        return e

    def _run(self):
        ucred = struct.calcsize("3i")
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(ucred))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:ucred])[0]
            msg = NotifyMessage(time.monotonic(), pid, data.decode(errors="replace"))
            cb = self.on_message
            if cb is not None:
                cb(msg)
            with self._lock:
                self.messages.append(msg)
                self._lock.notify_all()

    def snapshot(self):
        with self._lock:
            return list(self.messages)

    def with_key(self, key, since=0.0):
        return [m for m in self.snapshot() if key in m and m.t >= since]

    def wait_for(self, pred, timeout=30, since=0.0, what="a notify message"):
        """Waits for the first message at or after `since` (monotonic) matching pred."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for m in self.messages:
                    if m.t >= since and pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(repr(m) for m in self.messages[-15:])
                    raise AssertionError(f"expected {what} within {timeout}s; last messages:\n{seen}")
                self._lock.wait(min(left, 0.2))

    def wait_status(self, pattern, timeout=30, since=0.0):
        rx = re.compile(pattern)
        return self.wait_for(lambda m: "STATUS" in m and rx.search(m.get("STATUS")), timeout,
                             since, f"STATUS= matching /{pattern}/")

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class WatchdogDaemon(Daemon):
    """A daemon whose WATCHDOG_PID is its own pid: the shell exports $$ and execs it."""

    def __init__(self, *a, set_watchdog_pid=True, **kw):
        super().__init__(*a, **kw)
        self.set_watchdog_pid = set_watchdog_pid

    def argv(self, args=()):
        inner = super().argv(args)
        if not self.set_watchdog_pid:
            return inner
        return ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + inner


def notify_daemon(env, ns, watchdog_usec=None, extra_env=None, name="notify", wrap=None):
    """A (not started) daemon of DaemonEnv `env` that reports to NotifySocket `ns`.
    wrap: a function argv -> argv (e.g. FakeJournal.wrap_argv)."""
    e = ns.env(watchdog_usec) if ns is not None else {}
    e.update(extra_env or {})
    env._n += 1
    d = WatchdogDaemon(env.config_path, os.path.join(env.dir, f"{name}-{env._n}.log"), env=e,
                       set_watchdog_pid=bool(watchdog_usec))
    if wrap is not None:
        base = d.argv
        d.argv = lambda args=(): wrap(base(args))
    env.daemons.append(d)
    return d


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class FakeJournal:
    """journald's native socket, as far as sd_journal_sendv() can tell.

    Records are dicts of field -> str (the last value of a repeated field wins; `raw`
    keeps every pair). Both encodings are parsed: KEY=value lines and the binary-safe
    KEY\\n<le64 length><bytes>\\n form."""

    def __init__(self, dir):
        self.dir = os.path.join(dir, "journal")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.settimeout(0.1)
        self.records = []
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fake-journal", daemon=True)
        self._thread.start()

    @staticmethod
    def parse(data):
        fields, raw = {}, []
        i = 0
        while i < len(data):
            nl = data.find(b"\n", i)
            if nl < 0:
                nl = len(data)
            line = data[i:nl]
            if b"=" in line:
                k, _, v = line.partition(b"=")
                i = nl + 1
            else:
                k = line
                (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
                v = data[nl + 9:nl + 9 + n]
                i = nl + 9 + n + 1
            key, val = k.decode(), v.decode(errors="replace")
            fields[key] = val
            raw.append((key, val))
        fields["_raw"] = raw
        return fields

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            rec = self.parse(data)
            with self._lock:
                self.records.append(rec)
                self._lock.notify_all()

    def snapshot(self):
        with self._lock:
            return list(self.records)

    def wait_for(self, pred, timeout=30, what="a journal record"):
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for r in self.records:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(r.get("MESSAGE", "?") for r in self.records[-20:])
                    raise AssertionError(f"expected {what} within {timeout}s; last records:\n{seen}")
                self._lock.wait(min(left, 0.2))

    def wrap_argv(self, argv):
        """argv run in a private mount namespace where /run/systemd/journal is our dir."""
        script = ('set -e; mount --make-rprivate /; '
                  'if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 tmpfs /run/systemd; '
                  'else mount -t tmpfs -o mode=0755 tmpfs /run; mkdir /run/systemd; fi; '
                  'mkdir -p /run/systemd/journal; mount --bind "$0" /run/systemd/journal; '
                  'exec "$@"')
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script,
                self.dir] + list(argv)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()
