"""One throwaway benchmark world: PostgreSQL, certificates, nginx, keys, config.

Owns: a temporary directory holding a PostgreSQL 15 cluster (the test fixture's
PgCluster, with a bigger shared_buffers), a CA and server certificate made now,
the nginx token endpoint, a Fernet key list, and a daemon config
(tests/integration/lib/daemon.py's DaemonEnv) whose providers point at nginx;
seeding and migrating a database of N accounts; and removing all of it.
Must never: leave a process or a directory behind, or reach beyond loopback.
"""

import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from lib.daemon import DaemonEnv  # noqa: E402
from lib.pgcluster import PgCluster  # noqa: E402
from lib.pki import make_pki  # noqa: E402
from lib.seed import FernetKeys  # noqa: E402

import seedbulk  # noqa: E402
from nginx import Nginx  # noqa: E402

CLIENTS = {p: (f"bench-{p}-client", f"bench-{p}-secret") for p in seedbulk.PROVIDERS}
LEAD_S = 300


class EndpointRef:
    """What DaemonEnv needs to know about the token endpoint."""

    def __init__(self, nginx, kind):
        self.nginx, self.kind = nginx, kind
        self.clients = dict(CLIENTS)

    def token_url(self, provider, tenant=None):
        return self.nginx.token_url(provider, self.kind)


class World:
    def __init__(self, keep=False, nginx_workers=2, delay_s=0.2, access_log=False,
                 stat_statements=False):
        self.dir = tempfile.mkdtemp(prefix="oauth-bench-")
        os.chmod(self.dir, 0o755)
        self.keep = keep
        self.cluster = PgCluster(schema_file=os.path.join(ROOT, "tests", "fixtures",
                                                          "django-schema.sql"), base_dir=self.dir)
        self.cluster.init()
        with open(os.path.join(self.cluster.data_dir, "postgresql.conf"), "a") as f:
            # A database server of this size would give PostgreSQL a quarter of its memory;
            # 1 GB keeps the 1M-account table and its indexes in shared buffers.
            f.write("shared_buffers = '1GB'\nwork_mem = '16MB'\n")
            # Per-function call counts and times (pg_stat_user_functions): how many
            # claims and writes the daemon needed, i.e. how well it batches.
            f.write("track_functions = 'all'\n")
            # Extra settings for an investigation (e.g. auto_explain), from the environment.
            extra = os.environ.get("OAUTH_BENCH_PG_CONF")
            if extra:
                f.write(extra.replace(";", "\n") + "\n")
            if stat_statements:
                # Time per statement, also inside the daemon's functions (the profile).
                f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                        "pg_stat_statements.track = 'all'\n")
        self.cluster.start().load_template()
        self.pki = make_pki(self._mkdir("pki"))
        self.nginx = Nginx(self._mkdir("nginx"), self.pki.cert_file, self.pki.key_file,
                           workers=nginx_workers, delay_s=delay_s,
                           access_log=access_log).start()
        self.keys = FernetKeys()
        self.db = None
        self.env = None

    def _mkdir(self, name):
        p = os.path.join(self.dir, name)
        os.makedirs(p, exist_ok=True)
        return p

    def postmaster_pid(self):
        with open(os.path.join(self.cluster.data_dir, "postmaster.pid")) as f:
            return int(f.readline())

    def new_database(self, name):
        if self.db is not None:
            self.db.close()
            self.cluster.drop_database(self.db.name)
        self.db = self.cluster.create_database(name)
        return self.db

    def make_env(self, kind="h2", max_in_flight=1000, batch_size=500, log_level="info",
                 http_version=None):
        d = self._mkdir(f"daemon-{self.db.name}-{kind}")
        env = DaemonEnv(d, self.db.dsn, self.keys, token_server=EndpointRef(self.nginx, kind),
                        ca_file=self.pki.ca_file)
        over = {
            "daemon": {"log_level": log_level, "shutdown_timeout": "20s"},
            "refresh": {"lead_time": f"{LEAD_S}s", "jitter": "0", "batch_size": batch_size,
                        "max_in_flight": max_in_flight, "request_timeout": "30s",
                        "scan_interval": "1min"},
        }
        if http_version:
            over["http"] = {"http_version": http_version}
        for p in seedbulk.PROVIDERS:
            # At this scale one provider alone carries a third of 2,800/s with 200 ms
            # answers: the shipped per-provider defaults (128 in flight, 50/s) are for
            # small installations and would be the bottleneck, not the daemon.
            over[f"provider.{p}"] = {"max_in_flight": max_in_flight, "max_rate": 0}
        env.write_config(over)
        self.env = env
        return env

    def seed(self, n, expires_sql, parallel=None):
        """Seeds n accounts; returns seconds taken. Large tables are inserted in as many
        ranges at once as the machine has cores (one connection each)."""
        t = time.monotonic()
        parallel = parallel or (min(os.cpu_count() or 1, 4) if n >= 200000 else 1)
        if parallel <= 1:
            with self.db.conn() as c:
                seedbulk.seed(c, n, self.keys.primary, expires_sql)
            return time.monotonic() - t
        pools = seedbulk.ciphertext_pools(self.keys.primary)
        with self.db.conn() as c:
            seedbulk.seed_users(c, n)
        step = (n + parallel - 1) // parallel
        errors = []

        def one(lo, hi):
            try:
                with self.db.conn() as c:
                    seedbulk.seed_accounts(c, lo, hi, pools, expires_sql)
            except Exception as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(lo, min(n, lo + step - 1)))
                   for lo in range(1, n + 1, step)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        self.db.execute("SELECT setval('oauth_accounts_id_seq', %s)", (n,))
        return time.monotonic() - t

    def migrate(self):
        t = time.monotonic()
        self.env.migrate()
        self.db.execute("VACUUM ANALYZE")
        return time.monotonic() - t

    def destroy(self):
        try:
            self.nginx.stop()
        finally:
            if self.db is not None:
                self.db.close()
            self.cluster.destroy()
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
