"""Debian's PgBouncer in front of the test cluster, the pooler operators put there.

Owns: a pgbouncer process of its own (as the cluster's unprivileged owner: pgbouncer
refuses to run as root) on a free loopback port, with a config in a temp dir:
every database of the cluster, trust authentication, and the pool mode the test asks
for ("session" or "transaction"). Must never: listen beyond loopback, or outlive its
test (stop()).
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from .pgcluster import free_port


class PgBouncer:
    def __init__(self, cluster, pool_mode):
        assert pool_mode in ("session", "transaction", "statement")
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="oauth-pgbouncer-")
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.log_file = os.path.join(self.dir, "pgbouncer.log")
        self.proc = None

    def dsn(self, dbname):
        return f"postgresql://{self.cluster.superuser}@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout=20):
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        users = os.path.join(self.dir, "users.txt")
        with open(users, "w") as f:
            f.write(f'"{self.cluster.superuser}" ""\n')
        with open(self.ini, "w") as f:
            f.write(f"""[databases]
* = host=127.0.0.1 port={self.cluster.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = {self.pool_mode}
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
server_reset_query = DISCARD ALL
; Hand server connections out in turn, as a busy pool does: with one quiet client
; and LIFO reuse, a transaction pooler would give it the same backend every time
; and hide what it does to LISTEN under real load.
server_round_robin = 1
min_pool_size = 4
logfile = {self.log_file}
pidfile = {os.path.join(self.dir, "pgbouncer.pid")}
""")
        argv = [binary, self.ini]
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.cluster.os_user)
            for p in (self.dir, users, self.ini):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            argv = ["runuser", "-u", self.cluster.os_user, "--"] + argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start: " + self.log())

    def log(self):
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
