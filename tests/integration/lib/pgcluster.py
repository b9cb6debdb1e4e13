"""A throwaway PostgreSQL 15 cluster for tests and the try-it command.

Owns: one cluster in a fresh temporary directory, run as the unprivileged user
`postgres` when we are root (else as ourselves), listening on 127.0.0.1 at a free
port with its socket in the temp dir, trust authentication (it is throwaway) and
speed settings (fsync off). It loads the application's schema into a template
database and hands out fresh databases cloned from it. It can be stopped,
started and restarted on the same port (fault tests) and removes itself.
Must never: touch a system cluster, listen beyond loopback, or outlive the
process that made it (an atexit hook stops it).
"""

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import psycopg

PG_BIN = os.environ.get("OAUTH_PG_BIN", "/usr/lib/postgresql/15/bin")
TEMPLATE = "app_template"
TEST_APP_NAME = "oauth-test"  # application_name of the fixtures' own connections


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PgError(RuntimeError):
    pass


class PgCluster:
    def __init__(self, schema_file=None, port=None, base_dir=None, max_connections=200):
        self.schema_file = schema_file
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.max_connections = max_connections
        self.as_root = os.geteuid() == 0
        self.os_user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.dir = tempfile.mkdtemp(prefix="oauth-pg-", dir=base_dir)
        self.data_dir = os.path.join(self.dir, "data")
        self.socket_dir = os.path.join(self.dir, "sock")
        self.log_file = os.path.join(self.dir, "postgresql.log")
        self.superuser = "postgres"
        self._counter = 0
        self._lock = threading.Lock()
        self._running = False
        self._removed = False
        atexit.register(self.destroy)

    # ----- running things as the cluster's owner -----------------------------------------

    def _run(self, argv, check=True, timeout=120):
        if self.as_root:
            argv = ["runuser", "-u", self.os_user, "--"] + argv
        # A session of its own: a Ctrl-C meant for a foreground program (try-it) must not
        # reach the postmaster, which would shut down under the daemon.
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, cwd=self.dir, start_new_session=True)
        if check and p.returncode != 0:
            raise PgError(f"{' '.join(argv)} failed (exit {p.returncode}):\n{p.stdout}\n"
                          f"--- server log tail ---\n{self.log_tail()}")
        return p

    def log_tail(self, n=40):
        try:
            with open(self.log_file, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    # ----- lifecycle -------------------------------------------------------------------------

    def init(self, replication=False):
        """initdb and the fixture's settings. replication: WAL for a streaming standby
        (make_standby) instead of the minimal WAL that makes the usual tests fast."""
        if self.as_root:
            pw = pwd.getpwnam(self.os_user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data_dir, "-U", self.superuser,
                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        os.makedirs(self.socket_dir, exist_ok=True)
        if self.as_root:
            os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            "shared_buffers": "'128MB'",
            "fsync": "off",
            # synchronous_commit stays on: with fsync off a commit only costs a write(), and
            # an immediate (crash) restart must not lose what a client saw committed.
            "full_page_writes": "off",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "max_wal_size": "'1GB'",
            "checkpoint_timeout": "'30min'",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %d %a: '",
            "log_connections": "off",
            "timezone": "'UTC'",
            "idle_in_transaction_session_timeout": "'10min'",
        }
        if replication:
            settings.update({"wal_level": "replica", "max_wal_senders": "5",
                             "hot_standby": "on", "wal_keep_size": "'256MB'"})
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write("\n# oauth-refreshd test fixture\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all all 127.0.0.1/32 trust\n"
                    "host all all ::1/128 trust\n"
                    "host replication all 127.0.0.1/32 trust\n")
        return self

    def make_standby(self, synchronous=True):
        """A streaming replica of this (running, replication=True) cluster on a port of its
        own, started. synchronous: the primary's commits wait for the standby to have the
        WAL (synchronous_standby_names = '*'), so a failover loses nothing committed."""
        standby = PgCluster(schema_file=self.schema_file, max_connections=self.max_connections)
        if standby.as_root:
            pw = pwd.getpwnam(standby.os_user)
            os.chown(standby.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(standby.dir, 0o755)
        standby._run([os.path.join(PG_BIN, "pg_basebackup"), "-D", standby.data_dir,
                      "-h", self.host, "-p", str(self.port), "-U", self.superuser,
                      "-X", "stream", "-R", "--no-sync", "-c", "fast"])
        os.makedirs(standby.socket_dir, exist_ok=True)
        if standby.as_root:
            os.chown(standby.socket_dir, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(standby.data_dir, "postgresql.conf"), "a") as f:
            f.write(f"\n# the standby's own\nport = {standby.port}\n"
                    f"unix_socket_directories = '{standby.socket_dir}'\n")
        standby.start()
        if synchronous:
            self.admin("ALTER SYSTEM SET synchronous_standby_names = '*'")
            self.admin("SELECT pg_reload_conf()")
        return standby

    def promote(self, timeout=60):
        """Promotes a standby to primary (pg_ctl promote waits until it accepts writes)."""
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "-w", "-t",
                   str(timeout), "promote"])
        return self

    def start(self, timeout=60):
        # The log file is created by the cluster's owner; root reads it regardless.
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "-l", self.log_file,
                   "-w", "-t", str(timeout), "-o", "-c logging_collector=off", "start"])
        self._running = True
        return self

    def stop(self, mode="fast"):
        if not self._running:
            return
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "-w", "-t", "60",
                   "-m", mode, "stop"], check=False)
        self._running = False

    def restart(self, mode="fast", down_seconds=0.0):
        """Stops and starts again on the same port; data survives (mode 'immediate' crashes it,
        and the start then runs crash recovery)."""
        self.stop(mode)
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    @property
    def running(self):
        return self._running

    def destroy(self):
        if self._removed:
            return
        self._removed = True
        try:
            if self._running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ----- connections and databases -------------------------------------------------------------

    def dsn(self, dbname="postgres", **params):
        q = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{dbname}" + (f"?{q}" if q else "")

    def connect(self, dbname="postgres", **kw):
        kw.setdefault("autocommit", True)
        kw.setdefault("application_name", TEST_APP_NAME)
        return psycopg.connect(self.dsn(dbname), **kw)

    def admin(self, sql, params=None):
        with self.connect() as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def load_template(self):
        """Creates app_template with the application's schema."""
        self.admin(f"CREATE DATABASE {TEMPLATE}")
        with open(self.schema_file) as f:
            schema = f.read()
        with self.connect(TEMPLATE) as c:
            c.execute(schema)
        return self

    def create_database(self, name=None, template=TEMPLATE):
        with self._lock:
            self._counter += 1
            n = self._counter
        name = name or f"t{os.getpid()}_{n}"
        # CREATE DATABASE ... TEMPLATE fails while anything is connected to the template.
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return Database(self, name)

    def drop_database(self, name):
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_backends(self, dbname, include_fixture_connections=False):
        """pg_terminate_backend for every session on dbname except the fixtures' own
        (application_name oauth-test*) unless asked; returns how many were terminated."""
        rows = self.admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND (%s OR coalesce(application_name, '') NOT LIKE 'oauth-test%%')",
            (dbname, include_fixture_connections))
        return rows[0][0]

    def backends(self, dbname):
        """(pid, application_name, state, query) of every session on dbname."""
        return self.admin("SELECT pid, application_name, state, query FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))


class Database:
    """One per-test database cloned from the template."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self._conns = []
        self._conn = None

    @property
    def dsn(self):
        """A libpq URI usable by psycopg and by the daemon's [database] conninfo."""
        return self.cluster.dsn(self.name)

    def conn(self, **kw):
        """A new autocommit psycopg connection, closed at teardown."""
        c = self.cluster.connect(self.name, **kw)
        self._conns.append(c)
        return c

    def _shared(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.conn()
        return self._conn

    def execute(self, sql, params=None):
        """Runs one statement; returns the rows (a list, empty when there is no result)."""
        try:
            cur = self._shared().execute(sql, params)
        except psycopg.OperationalError:
            # The server restarted or our backend was terminated: one fresh try.
            self._conn = None
            cur = self._shared().execute(sql, params)
        return cur.fetchall() if cur.description else []

    def scalar(self, sql, params=None):
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def close(self):
        for c in self._conns:
            try:
                c.close()
            except Exception:
                pass
        self._conns.clear()
        self._conn = None

    def drop(self):
        self.close()
        if self.cluster.running:
            self.cluster.drop_database(self.name)
