"""Behind Debian's PgBouncer: session pooling works as a direct connection; transaction
pooling swallows LISTEN (it succeeds, but notifications never arrive), and the daemon
must notice, say so once, loudly, reconnect, and keep every refresh on time by its own
rescans meanwhile.

The daemon sends itself a heartbeat NOTIFY every `[database] heartbeat_interval`; one that
does not come back within the interval means LISTEN is deaf.
"""

import os
import re
import socket
import time
import urllib.request

import pytest

from lib.daemon import wait_until
from lib.pgbouncer import PgBouncer
from lib.sdnotify_socket import FakeJournal, NotifySocket, notify_daemon
from test_logging import message_ids

DEAF = "notifications do not arrive"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        m = re.search(rf"^{name} (\S+)$", r.read().decode(), re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def notify():
    ns = NotifySocket()
    yield ns
    ns.close()


def through(env, bouncer, db, extra=None):
    port = free_port()
    overrides = {"database": {"conninfo": bouncer.dsn(db.name), "heartbeat_interval": "2s"},
                 "metrics": {"listen": f"127.0.0.1:{port}"},
                 "refresh": {"scan_interval": "1min", "retry_min": "1s"}}
    for k, v in (extra or {}).items():
        overrides.setdefault(k, {}).update(v)
    env.write_config(overrides)
    return port


def test_session_pooling_hears_notifications(migrated_env, seeder, token_server, pg_cluster,
                                             db, notify):
    with PgBouncer(pg_cluster, "session") as bouncer:
        port = through(migrated_env, bouncer, db)
        later = seeder.add_account("google", expires_in=7200)
        d = notify_daemon(migrated_env, notify, name="session")
        d.start()
        notify.wait_for(lambda m: m.get("READY") == "1", timeout=30, what="READY=1")
        time.sleep(5)  # two heartbeats
        assert DEAF not in d.log(), "session pooling passes notifications through"
        assert metric(port, "oauth_refreshd_listen_deaf") == 0
        t0 = time.monotonic()
        assert migrated_env.ctl("refresh", later.id).returncode == 0
        wait_until(lambda: token_server.refresh_count(later.account_key) == 1, timeout=10,
                   message="the requested refresh")
        assert time.monotonic() - t0 < 10
        assert d.terminate() == 0


def test_transaction_pooling_deaf_listen_is_detected_and_refreshes_stay_on_time(
        migrated_env, seeder, token_server, pg_cluster, db, notify, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the fake journald needs a private mount namespace (root)")
    journal = FakeJournal(str(tmp_path))
    with PgBouncer(pg_cluster, "transaction") as bouncer:
        port = through(migrated_env, bouncer, db)
        d = notify_daemon(migrated_env, notify, name="transaction", wrap=journal.wrap_argv)
        open(d.log_path, "ab").close()
        st = os.stat(d.log_path)
        d.env = dict(d.env or {}, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        d.start()
        notify.wait_for(lambda m: m.get("READY") == "1", timeout=30, what="READY=1")
        deaf_id = message_ids()["LISTEN_DEAF"]
        rec = journal.wait_for(lambda r: r.get("MESSAGE_ID") == deaf_id, timeout=20,
                               what="the LISTEN deaf record")
        assert rec.get("PRIORITY") == "4" and DEAF in rec.get("MESSAGE", ""), rec
        assert metric(port, "oauth_refreshd_listen_deaf") == 1
        notify.wait_for(lambda m: "notifications deaf" in m.get("STATUS", ""), timeout=10,
                        what="STATUS= saying notifications are deaf")
        # An account that comes due now: its trigger's NOTIFY is lost, the rescans find it.
        t0 = time.monotonic()
        acct = seeder.add_account("github", expires_in=-60)
        wait_until(lambda: token_server.refresh_count(acct.account_key) == 1, timeout=30,
                   message="a due account refreshed without its notification")
        took = time.monotonic() - t0
        time.sleep(4)  # more heartbeats: still deaf, but said only once
        loud = [r for r in journal.snapshot() if r.get("MESSAGE_ID") == deaf_id]
        assert len(loud) == 1, f"the deaf LISTEN is said once, loudly; saw {len(loud)}"
        assert d.terminate() == 0
    journal.close()
    print(f"due account refreshed {took:.1f}s after it came due, without a notification")
