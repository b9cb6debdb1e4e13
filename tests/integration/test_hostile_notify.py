"""Nothing from outside can stop the loop (issue 10 part 3; SPEC §6). Any database role may
NOTIFY the two channels the daemon listens on, and the application may store 'infinity' in
expires_at. Before the fix `NOTIFY oauth_refreshd_account_changed, '1 nan'` armed a libev
timer with NaN: it sat on top of libev's heap and no timer fired again (watchdog pings,
store flushes, curl timeouts). Here the test plays systemd with a watchdog and checks that
after every hostile payload on both channels the pings go on and a requested refresh still
happens."""

import threading
import time

import pytest

from lib.daemon import wait_until
from lib.sdnotify_socket import NotifySocket, notify_daemon

LEAD_S = 300  # lead_time of the test config (lib/daemon.py)
CHANNELS = ("oauth_refreshd_account_changed", "oauth_refresh_request")

# Everything NOTIFY can carry (no NUL byte) that a number parser could trip on.
HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999", "-1e999", "-0",
           "0x1p3", "1e-999", "9" * 300, "", " ", "1,5", "\x01\x02\x7f\x1b[0m",
           "\u00ff\ufffd\u202e", "18446744073709551616", "-9223372036854775808"]


def hostile_payloads():
    for v in HOSTILE:
        yield v
        yield f"1 {v}"
        yield f"{v} 1"
        yield f"1 {v} 2"


@pytest.fixture
def notify():
    ns = NotifySocket()
    yield ns
    ns.close()


def pings_since(ns, t):
    return [m for m in ns.with_key("WATCHDOG", since=t)]


def assert_watchdog_alive(ns, d, seconds=3.0):
    t = time.monotonic()
    time.sleep(seconds)
    n = len(pings_since(ns, t))
    # WATCHDOG_USEC=1s: a ping every 0.5 s, ~6 in 3 s; a wedged loop sends none.
    assert n >= 3, f"watchdog pings stopped: {n} in {seconds}s\n{d.log_tail()}"


def start(env, ns, overrides=None):
    env.write_config(overrides or {})
    d = notify_daemon(env, ns, watchdog_usec=1_000_000)
    d.start()
    ns.wait_for(lambda m: m.get("READY") == "1", timeout=30, what="READY=1")
    return d


def spam(db, stop, payloads):
    """Sends payloads round and round until stop is set (own autocommit connection)."""
    c = db.conn()
    while not stop.is_set():
        for ch, p in payloads:
            c.execute("SELECT pg_notify(%s, %s)", (ch, p))
            if stop.is_set():
                break


def test_hostile_notify_payloads_never_stop_timers_or_requested_refreshes(
        migrated_env, seeder, token_server, notify, db):
    # Google accounts that are due but cannot be claimed (google's one slot is taken by a
    # request its server never answers) make the due timer fire every 0.25 s; between its
    # firing and the next "next due" answer the due timer is idle: the moment a NaN used to
    # get armed.
    d = start(migrated_env, notify, {"refresh": {"scan_interval": "1h"},
                                     "provider.google": {"max_in_flight": 1},
                                     "daemon": {"log_level": "debug"}})
    token_server.inject("delay", provider="google", count=None, ms=600_000)
    seeder.add_accounts(3, "google", expires_in=-60)
    wait_until(lambda: token_server.in_flight(), timeout=15, message="a google request held")

    # First NaN alone (payloads that kick would keep re-arming the due timer and hide the
    # idle moment), then every hostile payload on both channels.
    nan_only = [("oauth_refreshd_account_changed", "1 nan")]
    every = [(ch, p) for ch in CHANNELS for p in hostile_payloads()]
    for payloads in (nan_only, every):
        stop = threading.Event()
        t = threading.Thread(target=spam, args=(db, stop, payloads), daemon=True)
        t.start()
        try:
            time.sleep(4)
        finally:
            stop.set()
            t.join(10)
        assert d.running(), d.log_tail()
        assert_watchdog_alive(notify, d)
        # Nothing kicks for an account that comes due a few seconds from now: only the
        # due timer (armed by its own notification from the trigger) finds it.
        soon = seeder.add_account("github", expires_in=LEAD_S + 3)
        wait_until(lambda: token_server.refresh_count(soon.account_key) == 1, timeout=15,
                   message=f"an account coming due 3s later, refreshed by the due timer\n"
                           f"{d.log_tail()}")

    later = seeder.add_account("github", expires_in=7200)  # not due: only a request refreshes it
    db.execute("SELECT pg_notify('oauth_refresh_request', %s)", (str(later.id),))
    wait_until(lambda: token_server.refresh_count(later.account_key) == 1, timeout=15,
               message=f"the requested refresh after the hostile payloads\n{d.log_tail()}")
    assert_watchdog_alive(notify, d, 1.5)
    d.terminate()
    assert d.returncode == 0, d.log_tail()


@pytest.mark.parametrize("value", ["infinity", "-infinity"])
def test_an_infinite_expires_at_in_the_database_does_not_break_the_loop(
        migrated_env, seeder, token_server, notify, db, value):
    d = start(migrated_env, notify, {"refresh": {"scan_interval": "2s"}})
    odd = seeder.add_account("github", expires_in=7200)
    # The application stores 'infinity': the trigger notifies "<id> Infinity", next_wakeup
    # and claim rows carry it through extract(epoch ...).
    db.execute("UPDATE oauth_accounts SET expires_at = %s::timestamptz WHERE id = %s",
               (value, odd.id))
    db.execute("SELECT pg_notify('oauth_refresh_request', %s)", (str(odd.id),))
    wait_until(lambda: token_server.refresh_count(odd.account_key) >= 1, timeout=15,
               message=f"the requested refresh of the account expiring {value}\n{d.log_tail()}")
    assert_watchdog_alive(notify, d)
    other = seeder.add_account("google", expires_in=-60)
    wait_until(lambda: token_server.refresh_count(other.account_key) == 1, timeout=15,
               message=f"an ordinary due account after it\n{d.log_tail()}")
    assert d.running(), d.log_tail()
    d.terminate()
    assert d.returncode == 0, d.log_tail()
