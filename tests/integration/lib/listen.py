"""Collecting NOTIFY payloads, e.g. the daemon's oauth_refresh_event (SPEC §5).

Owns: one dedicated connection (application_name oauth-test-listener, so
terminate_backends spares it) that LISTENs on a channel, and a background thread
that drains notifications as they arrive, so the server never blocks on a full
socket. Must never: run queries on behalf of a test.
"""

import json
import select
import threading
import time

import psycopg


class NotifyListener:
    def __init__(self, dsn, channel="oauth_refresh_event"):
        self.dsn = dsn
        self.channel = channel
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._items = []   # (monotonic time, payload str)
        self._stop = False
        self._conn = None
        self._thread = None

    def start(self):
        self._connect()
        self._thread = threading.Thread(target=self._run, name=f"listen:{self.channel}", daemon=True)
        self._thread.start()
        return self

    def _connect(self):
        self._conn = psycopg.connect(self.dsn, autocommit=True, application_name="oauth-test-listener")
        self._conn.execute(f'LISTEN "{self.channel}"')

    def _run(self):
        while not self._stop:
            try:
                pg = self._conn.pgconn
                r, _, _ = select.select([pg.socket], [], [], 0.1)
                if r:
                    pg.consume_input()
                    while True:
                        n = pg.notifies()
                        if n is None:
                            break
                        with self._cond:
                            self._items.append((time.monotonic(), n.extra.decode()))
                            self._cond.notify_all()
            except Exception:
                if self._stop:
                    return
                # The server restarted: reconnect and LISTEN again (events meanwhile are lost,
                # as they would be for any listener).
                time.sleep(0.2)
                try:
                    self._conn.close()
                except Exception:
                    pass
                try:
                    self._connect()
                except Exception:
                    pass

    def stop(self):
        self._stop = True
        if self._thread:
            self._thread.join(5)
        try:
            self._conn.close()
        except Exception:
            pass

    @property
    def payloads(self):
        with self._lock:
            return [p for _, p in self._items]

    @property
    def events(self):
        """Payloads parsed as JSON (a payload that is not JSON appears as {"_raw": text})."""
        out = []
        for p in self.payloads:
            try:
                out.append(json.loads(p))
            except ValueError:
                out.append({"_raw": p})
        return out

    def events_for(self, account_id=None, event=None):
        return [e for e in self.events
                if (account_id is None or e.get("account_id") == account_id)
                and (event is None or e.get("event") == event)]

    def wait_for(self, pred=None, count=1, timeout=30):
        """Waits until at least `count` events satisfy pred (default: any); returns them."""
        pred = pred or (lambda e: True)
        deadline = time.monotonic() + timeout
        while True:
            matched = [e for e in self.events if pred(e)]
            if len(matched) >= count:
                return matched
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {count} matching event(s) on {self.channel} within "
                                     f"{timeout}s, saw {len(matched)}; all events: {self.events[-20:]}")
            with self._cond:
                self._cond.wait(min(left, 0.2))

    def clear(self):
        with self._lock:
            self._items.clear()
