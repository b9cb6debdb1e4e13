"""A PostgreSQL failover, as managed services and Patroni do it: a streaming standby is
promoted after the primary dies.

The daemon is given both hosts in one conninfo with target_session_attrs=read-write. It
loses the primary while requests are in flight at a rotating provider, holds (and spools)
the rotated results, finds the promoted standby, listens again, catches up with what it
missed, and writes everything: no refresh token lost, none used twice. STATUS=, the
journal's MESSAGE_IDs and /metrics tell the story. Replication is synchronous here: with
asynchronous replication a write the old primary confirmed can be missing on the new one,
which no client can repair (docs/running-under-systemd.md says so).
"""

import os
import re
import socket
import urllib.request

import pytest

from lib.daemon import DaemonEnv, wait_until
from lib.pgcluster import PgCluster, TEMPLATE
from lib.sdnotify_socket import FakeJournal, NotifySocket, notify_daemon
from lib.seed import Seeder
from test_logging import message_ids

N_ACCOUNTS = 40


@pytest.fixture
def pair(oauth_source_dir):
    """A primary with the application's schema and a synchronous standby."""
    primary = PgCluster(schema_file=os.path.join(oauth_source_dir, "tests", "fixtures",
                                                 "django-schema.sql"))
    standby = None
    try:
        primary.init(replication=True).start().load_template()
        db = primary.create_database("failover", template=TEMPLATE)
        standby = primary.make_standby(synchronous=True)
        yield primary, standby, db
    finally:
        db_close = locals().get("db")
        if db_close is not None:
            db_close.close()
        if standby is not None:
            standby.destroy()
        primary.destroy()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def gauge(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_failover_to_a_promoted_standby_loses_no_token_and_refreshes_none_twice(
        pair, tmp_path, fernet_keys, token_server_factory, pki):
    if os.geteuid() != 0:
        pytest.skip("the fake journald needs a private mount namespace (root)")
    primary, standby, db = pair
    # Answers take a while, so requests are in flight when the primary dies.
    server = token_server_factory(delay_ms=400)
    both = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/"
            f"{db.name}?target_session_attrs=read-write&connect_timeout=3")
    os.makedirs(tmp_path / "daemon")
    env = DaemonEnv(str(tmp_path / "daemon"), both, fernet_keys, token_server=server,
                    ca_file=pki.ca_file)
    env.migrate()
    metrics_port = free_port()
    env.write_config({"metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                      "refresh": {"max_in_flight": 8, "retry_min": "1s", "retry_max": "5s",
                                  "scan_interval": "3s"}})
    seeder = Seeder(db, fernet_keys, server)
    # GitHub rotates strictly: the old refresh token dies the moment the server answers.
    accts = [seeder.add_account("github", expires_in=-60) for _ in range(N_ACCOUNTS)]

    journal = FakeJournal(str(tmp_path))
    ns = NotifySocket()
    try:
        d = notify_daemon(env, ns, name="failover", wrap=journal.wrap_argv)
        open(d.log_path, "ab").close()
        st = os.stat(d.log_path)
        d.env = dict(d.env or {}, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        d.start()
        ns.wait_for(lambda m: m.get("READY") == "1", timeout=30, what="READY=1")

        # Kill the primary once some, not all, accounts have been refreshed.
        wait_until(lambda: 5 <= sum(server.refresh_count(a.account_key) for a in accts),
                   timeout=30, message="the first refreshes")
        # Between two claims nothing may be in flight for a moment: kill it when something is.
        wait_until(lambda: server.in_flight(), timeout=10, interval=0.005,
                   message="requests in flight when the primary dies")
        primary.stop("immediate")
        ids = message_ids()
        journal.wait_for(lambda r: r.get("MESSAGE_ID") == ids["DB_LOST"], timeout=15,
                         what="the 'database lost' record")
        wait_until(lambda: gauge(scrape(metrics_port), "oauth_refreshd_database_connected") == 0,
                   timeout=10, message="database_connected 0")
        ns.wait_for(lambda m: "database unreachable" in m.get("STATUS", ""), timeout=15,
                    what="STATUS= saying the database is away")
        # The answers that arrive meanwhile carry rotated tokens: held, and spooled.
        # ("1 result held" when a single request was in flight at the kill.)
        held = ns.wait_for(lambda m: re.search(r"\b[1-9]\d* results? held", m.get("STATUS", "")),
                           timeout=15, what="STATUS= with results held")
        spool_dir = os.path.join(env.state_dir, "spool")
        assert any(f.endswith(".spool") for f in os.listdir(spool_dir)), \
            f"held rotated results are spooled ({held.get('STATUS')})"

        standby.promote()
        journal.wait_for(lambda r: r.get("MESSAGE_ID") == ids["DB_RESTORED"], timeout=60,
                         what="the 'database restored' record")

        # Caught up and listening: everything written on the new primary, and an account the
        # application adds now (a NOTIFY from the trigger) is refreshed too.
        newdb = standby.connect(db.name)
        late = Seeder(_DbOn(newdb), fernet_keys, server).add_account("github", expires_in=-60)
        everyone = accts + [late]

        def all_live():
            for a in everyone:
                if server.refresh_count(a.account_key) == 0:
                    return False
                row = newdb.execute("SELECT refresh_token FROM oauth_accounts WHERE id = %s",
                                    (a.id,)).fetchone()
                if fernet_keys.decrypt(row[0]) != server.current_refresh_token(a.account_key):
                    return False
            return True
        wait_until(all_live, timeout=90, message="every row holding the provider's live token")
        assert server.violations() == [], f"a refresh token was used twice: {server.violations()}"
        counts = {a.account_key: server.refresh_count(a.account_key) for a in everyone}
        assert all(c == 1 for c in counts.values()), f"refreshed more than once: {counts}"
        wait_until(lambda: gauge(scrape(metrics_port), "oauth_refreshd_database_connected") == 1,
                   timeout=10, message="database_connected 1")
        ns.wait_for(lambda m: f"{len(everyone)} refreshed" in m.get("STATUS", "")
                    and "database connected" in m.get("STATUS", ""), timeout=30,
                    what="STATUS= with every account refreshed and the database connected")
        newdb.close()
        assert d.terminate() == 0
    finally:
        ns.close()
        journal.close()
        env.cleanup()


class _DbOn:
    """The Seeder's view of a database (execute/scalar/conn) over one psycopg connection."""

    def __init__(self, conn):
        self._c = conn

    def execute(self, sql, params=None):
        cur = self._c.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def scalar(self, sql, params=None):
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def conn(self):
        return self._c
