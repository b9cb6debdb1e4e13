"""What the daemon tells systemd (SPEC §7; issue 4 "sd_notify"): READY only when it can
really work, a human STATUS= that stays current, watchdog pings from the event loop,
RELOADING/READY around SIGHUP, STOPPING at shutdown. The test plays systemd with a
notify socket of its own (lib/sdnotify_socket.py)."""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from lib.daemon import clean_env, daemon_path, wait_until
from lib.sdnotify_socket import NotifySocket, monotonic_usec, notify_daemon

READY_LOG = r"ready: connected"


@pytest.fixture
def notify():
    ns = NotifySocket()
    yield ns
    ns.close()


def start(env, ns, overrides=None, **kw):
    if overrides:
        env.write_config(overrides)
    d = notify_daemon(env, ns, **kw)
    d.start()
    return d


def ready_messages(ns, since=0.0):
    return [m for m in ns.snapshot() if m.get("READY") == "1" and m.t >= since]


def test_ready_comes_once_after_connect_schema_check_and_listen(
        migrated_env, seeder, token_server, notify, db):
    later = seeder.add_account("github", expires_in=7200)  # not due: only a request refreshes it
    stopped = threading.Event()
    holder = {}

    def freeze_at_ready(msg):
        # systemd would now consider the unit started: freeze the daemon right there, so it
        # cannot issue LISTEN (or anything) after READY=1.
        if msg.get("READY") == "1" and not stopped.is_set():
            os.kill(holder["pid"], signal.SIGSTOP)
            stopped.set()

    notify.on_message = freeze_at_ready
    d = notify_daemon(migrated_env, notify)
    migrated_env.write_config({"refresh": {"scan_interval": "1h"}})
    d.start()
    holder["pid"] = d.pid
    assert stopped.wait(30), f"no READY=1 within 30s; messages: {notify.snapshot()}"
    try:
        apps = [r[1] for r in db.cluster.backends(db.name)]
        assert "oauth-refreshd" in apps, f"READY=1 before the database session existed: {apps}"
        # A request sent while the daemon is frozen is only seen if LISTEN was already active.
        db.execute("SELECT pg_notify('oauth_refresh_request', %s)", (str(later.id),))
    finally:
        os.kill(d.pid, signal.SIGCONT)
    wait_until(lambda: token_server.refresh_count(later.account_key) == 1, timeout=15,
               message="the refresh request sent right after READY=1 to be honoured")

    msgs = notify.snapshot()
    ready = ready_messages(notify)
    assert len(ready) == 1, f"expected exactly one READY=1, saw {ready}"
    before = [m for m in msgs if m.t < ready[0].t]
    assert before and all("STATUS" in m and "READY" not in m for m in before), before
    assert re.search(r"connecting|database", before[0].get("STATUS")), before[0]
    assert "in flight" in ready[0].get("STATUS", ""), f"READY=1 carries the status: {ready[0]}"
    assert all(m.pid == d.pid for m in msgs), (
        f"every message must come from the main pid {d.pid} (NotifyAccess=main): {msgs}")
    assert re.search(READY_LOG, d.log()), d.log_tail()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_no_ready_when_schema_is_missing(daemon_env, notify):
    d = start(daemon_env, notify)
    rc = d.wait(60)
    assert rc == 69, f"expected exit 69 without the schema, saw {rc}\n{d.log_tail()}"
    assert ready_messages(notify) == [], f"READY=1 must not be sent: {notify.snapshot()}"


def test_no_ready_when_config_is_broken(daemon_env, notify):
    daemon_env.write_config({"refresh": {"no_such_key": "1"}})
    d = start(daemon_env, notify)
    rc = d.wait(30)
    assert rc == 78, f"expected exit 78 for a bad config, saw {rc}\n{d.log_tail()}"
    assert ready_messages(notify) == [], notify.snapshot()


def test_database_down_at_start_keeps_trying_says_so_then_ready(
        migrated_env, pg_cluster, notify):
    pg_cluster.stop()
    try:
        d = start(migrated_env, notify)
        m = notify.wait_status(r"database unreachable, retrying in \d+s; 0 results held",
                               timeout=15)
        time.sleep(3)
        assert d.running(), f"the daemon must keep trying, it exited:\n{d.log_tail()}"
        assert ready_messages(notify) == [], "no READY=1 while the database is down"
        retries = len(re.findall(r"cannot connect to the database", d.log()))
        assert retries >= 2, f"expected repeated attempts, saw {retries}\n{d.log_tail()}"
    finally:
        pg_cluster.start()
    notify.wait_for(lambda m: m.get("READY") == "1", timeout=45,
                    what="READY=1 once the database came up")
    assert m.pid == d.pid
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_status_is_current_counts_outcomes_and_shows_outage_with_held_results(
        migrated_env, seeder, token_server, notify, pg_cluster, db):
    for _ in range(2):
        seeder.add_account("google", expires_in=-60)
    revoked = seeder.add_account("github", expires_in=-60)
    token_server.revoke(revoked.account_key)
    failing = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", provider="microsoft", account=failing.account_key, count=1)
    seeder.add_account("google", expires_in=7200)
    d = start(migrated_env, notify, {"refresh": {"retry_min": "30min", "retry_max": "1h",
                                                 "scan_interval": "1h"}})
    m = notify.wait_status(r"^0 in flight, 2 refreshed, 1 failed, 1 revoked; next due in \d+s; "
                           r"database connected; 0 results held$", timeout=30)
    due_in = int(re.search(r"next due in (\d+)s", m.get("STATUS")).group(1))
    assert 0 < due_in <= 7200, m

    # A request in flight when the database goes away: its result is held, and said so.
    token_server.hold()
    late = seeder.add_account("google", expires_in=-60)
    wait_until(lambda: token_server.in_flight(), timeout=15, message="a request in flight")
    notify.wait_status(r"^1 in flight, 2 refreshed", timeout=10)
    pg_cluster.stop()
    try:
        token_server.release()
        notify.wait_status(r"^database unreachable, retrying in \d+s; 1 result held; 0 in flight",
                           timeout=20)
    finally:
        pg_cluster.start()
    notify.wait_status(r"^0 in flight, 3 refreshed, 1 failed, 1 revoked; .*0 results held$",
                       timeout=45)
    assert token_server.refresh_count(late.account_key) == 1
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_watchdog_pings_at_half_the_interval_and_stop_while_the_process_is_stopped(
        migrated_env, notify):
    d = start(migrated_env, notify, watchdog_usec=1_000_000)
    notify.wait_for(lambda m: m.get("READY") == "1", timeout=30)
    t0 = time.monotonic()
    time.sleep(3.2)
    pings = [m.t for m in notify.with_key("WATCHDOG", since=t0)]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert 5 <= len(pings) <= 8, f"expected ~6 pings in 3.2s at a 1s watchdog, saw {len(pings)}"
    assert all(0.35 <= g <= 0.65 for g in gaps), f"pings must come every ~0.5s, gaps {gaps}"
    assert all(m.get("WATCHDOG") == "1" and m.pid == d.pid
               for m in notify.with_key("WATCHDOG")), notify.with_key("WATCHDOG")

    os.kill(d.pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)
        t_stop = time.monotonic()
        time.sleep(2.0)
        during = notify.with_key("WATCHDOG", since=t_stop)
    finally:
        os.kill(d.pid, signal.SIGCONT)
    assert during == [], f"a stopped daemon must not ping, saw {during}"
    t_cont = time.monotonic()
    notify.wait_for(lambda m: "WATCHDOG" in m, since=t_cont, timeout=2,
                    what="pings to resume after SIGCONT")
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_watchdog_pings_come_from_the_event_loop_so_a_blocked_loop_stops_them(
        migrated_env, db, notify):
    """The process is not stopped, only its event loop is stuck (blocked writing a log
    line to a full pipe): a pinger on its own thread would keep pinging; ours must not."""
    migrated_env.write_config({"daemon": {"log_level": "debug"}})
    env = clean_env(notify.env(1_000_000))
    argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh",
            daemon_path(), "-c", migrated_env.config_path]
    r, w = os.pipe()
    import fcntl
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: one page, quick to fill
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w, env=env,
                            start_new_session=True)
    os.close(w)
    drained = []
    try:
        # Drain while starting, so it gets READY.
        os.set_blocking(r, False)

        def drain_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    chunk = os.read(r, 65536)
                    if chunk:
                        drained.append(chunk)
                except BlockingIOError:
                    time.sleep(0.02)

        deadline = time.monotonic() + 30
        while not ready_messages(notify) and time.monotonic() < deadline:
            drain_for(0.1)
        assert ready_messages(notify), f"no READY=1: {b''.join(drained)[-2000:]!r}"
        drain_for(1.2)
        assert notify.with_key("WATCHDOG"), "pings expected while healthy"
        assert len(os.listdir(f"/proc/{proc.pid}/task")) == 1, "the daemon is one thread"

        # Stop reading and make it log a lot: invalid refresh requests are logged one each.
        for i in range(80):
            db.execute("SELECT pg_notify('oauth_refresh_request', %s)", (f"not-an-id-{i}",))
        wait_until(lambda: _state(proc.pid) == "S" and "pipe" in _wchan(proc.pid), timeout=10,
                   message="the daemon blocked writing to its full stderr pipe")
        time.sleep(0.3)
        t_block = time.monotonic()
        time.sleep(2.0)
        during = notify.with_key("WATCHDOG", since=t_block)
        assert _state(proc.pid) != "T", "the process must not be stopped, only its loop blocked"
        assert during == [], f"a blocked event loop must not ping, saw {during}"

        t_free = time.monotonic()
        drain_for(1.5)
        resumed = notify.with_key("WATCHDOG", since=t_free)
        assert resumed, "pings must resume once the loop runs again"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        os.close(r)


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wchan(pid):
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def test_reload_sends_reloading_with_monotonic_usec_then_ready_good_and_broken(
        migrated_env, seeder, token_server, notify, events):
    d = start(migrated_env, notify)
    notify.wait_for(lambda m: m.get("READY") == "1", timeout=30)

    # A good config.
    migrated_env.write_config({"daemon": {"log_level": "info"}})
    t_before, since = monotonic_usec(), time.monotonic()
    d.send_signal(signal.SIGHUP)
    rel = notify.wait_for(lambda m: m.get("RELOADING") == "1", since=since, timeout=10,
                          what="RELOADING=1")
    t_after = monotonic_usec()
    usec = int(rel.get("MONOTONIC_USEC", "0"))
    assert t_before <= usec <= t_after, (
        f"MONOTONIC_USEC must be CLOCK_MONOTONIC at the reload: {t_before} <= {usec} <= {t_after}")
    ready = notify.wait_for(lambda m: m.get("READY") == "1", since=rel.t, timeout=10,
                            what="READY=1 after a good reload")
    assert "reload failed" not in ready.get("STATUS", ""), ready
    d.wait_for_log(r"configuration reloaded", timeout=5)

    # A broken config: refused whole, said so in the log and in STATUS=.
    size = d.log_size()
    migrated_env.write_config({"refresh": {"bogus_key": "1"}})
    since = time.monotonic()
    d.send_signal(signal.SIGHUP)
    rel = notify.wait_for(lambda m: m.get("RELOADING") == "1", since=since, timeout=10)
    ready = notify.wait_for(lambda m: m.get("READY") == "1", since=rel.t, timeout=10,
                            what="READY=1 after a broken reload too")
    assert "MONOTONIC_USEC" in rel.fields, rel
    assert re.search(r"reload failed: .*bogus_key", ready.get("STATUS", "")), ready
    m = d.wait_for_log(r"configuration reload failed: (.*bogus_key.*)", timeout=5, after=size)
    assert "oauth-refreshd.conf" in m.group(1), f"the error names the file: {m.group(0)}"
    assert d.running(), "a broken config must not stop the daemon"
    # The old config is still in force: new work is done.
    a = seeder.add_account("google", expires_in=-60)
    events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id, timeout=15)
    notify.wait_status(r"reload failed: .*bogus_key", since=ready.t + 0.01, timeout=10)

    # Fixed again: the error leaves STATUS=.
    migrated_env.write_config({"daemon": {"log_level": "info"}})
    since = time.monotonic()
    d.send_signal(signal.SIGHUP)
    ready = notify.wait_for(lambda m: m.get("READY") == "1", since=since, timeout=10)
    assert "reload failed" not in ready.get("STATUS", ""), ready
    d.terminate()
    assert d.returncode == 0, d.log_tail()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_is_sent_at_shutdown_then_exit_0(migrated_env, notify, sig):
    d = start(migrated_env, notify)
    ready = notify.wait_for(lambda m: m.get("READY") == "1", timeout=30)
    since = time.monotonic()
    d.send_signal(sig)
    rc = d.wait(30)
    assert rc == 0, f"expected exit 0 after {sig.name}, saw {rc}\n{d.log_tail()}"
    # The datagram is in the socket before the exit, but the reader thread may not
    # have taken it yet: wait for it rather than read a snapshot at once.
    notify.wait_for(lambda m: m.get("STOPPING") == "1", timeout=10)
    stopping = [m for m in notify.snapshot() if m.get("STOPPING") == "1"]
    assert len(stopping) == 1 and stopping[0].t >= since, notify.snapshot()
    assert stopping[0].pid == d.pid and "STATUS" in stopping[0], stopping[0]
    later = [m for m in notify.snapshot() if m.t > stopping[0].t and "READY" in m]
    assert later == [] and ready.t < stopping[0].t, "nothing but STATUS= after STOPPING=1"
