"""Prometheus metrics on `[metrics] listen` (issue 7): served by the daemon's own loop,
exact counters per provider and outcome, histograms, gauges, reload bookkeeping, a
valid exposition (`promtool check metrics`), and clear refusals of bad addresses."""

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import re

import pytest

from lib.daemon import wait_until
from lib.sdnotify_socket import NotifySocket, notify_daemon

PROVIDERS = ("google", "github", "microsoft")
OUTCOMES = ("refreshed", "revoked", "transient", "bad_response", "config_error", "discarded",
            "lost_race", "local_error")
FAILURES = ("transient", "bad_response", "config_error", "local_error")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, path="/metrics", method="GET", timeout=5):
    """(status, content-type, body text) of one request to the metrics endpoint."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def parse(text):
    """{(name, ((label, value), ...)): float} of every sample in an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = ()
        if "{" in head:
            name, rest = head.split("{", 1)
            pairs = []
            for part in rest.rstrip("}").split('",'):
                k, v = part.split("=", 1)
                pairs.append((k, v.strip('"')))
            labels = tuple(sorted(pairs))
        else:
            name = head
        out[(name, labels)] = float(value)
    return out


def sample(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"expected a sample {name}{labels}; have e.g. {list(samples)[:5]}"
    return samples[key]


def scrape(port):
    status, ctype, body = http(port)
    assert status == 200, f"GET /metrics: expected 200, saw {status}: {body[:200]}"
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return body, parse(body)


def start_with_metrics(env, extra=None):
    port = free_port()
    overrides = {"metrics": {"listen": f"127.0.0.1:{port}"},
                 "refresh": {"retry_min": "1s", "retry_max": "10min", "scan_interval": "2s"}}
    for k, v in (extra or {}).items():
        overrides.setdefault(k, {}).update(v)
    env.write_config(overrides)
    d = env.daemon("metrics")
    d.start()
    d.wait_for_log("ready", timeout=30)
    d.wait_for_log("serving http://127.0.0.1", timeout=5)
    return d, port


def promtool_check(text):
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    p = subprocess.run([tool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert p.returncode == 0, (f"promtool check metrics: expected exit 0, saw {p.returncode}\n"
                               f"{p.stdout.decode()}{p.stderr.decode()}")
    lint = (p.stdout + p.stderr).decode().strip()
    assert lint == "", f"promtool lint findings: {lint}"


def test_counters_are_exact_per_provider_and_outcome_and_promtool_accepts_them(
        migrated_env, seeder, token_server, events, db, fernet_keys):
    from cryptography.fernet import Fernet
    # Phase 1: refreshed, revoked, bad response then refreshed, transient then refreshed,
    # and one attempt never sent (undecryptable refresh token).
    g = [seeder.add_account("google", expires_in=-60) for _ in range(3)]
    rev = seeder.add_account("github", expires_in=-60)
    token_server.revoke(rev.account_key)
    bad = seeder.add_account("github", expires_in=-60)
    token_server.inject("not_json", account=bad.account_key, count=1)
    tr = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", account=tr.account_key, count=1)
    foreign = Fernet(Fernet.generate_key()).encrypt(b"rt-unknown-key").decode()
    local = seeder.add_account("google", expires_in=-60, raw={"refresh_token": foreign})

    d, port = start_with_metrics(migrated_env)
    events.wait_for(lambda e: e["event"] == "refreshed", count=5, timeout=30)
    events.wait_for(lambda e: e["event"] == "revoked", count=1, timeout=10)
    events.wait_for(lambda e: e["event"] == "failed", count=3, timeout=10)

    # Phase 2: a result discarded because the application changed the row mid-flight; the
    # endpoint answers while that request is in flight.
    disc = seeder.add_account("github", expires_in=7200)
    token_server.inject("delay", account=disc.account_key, count=1, ms=2500)
    assert migrated_env.ctl("refresh", disc.id).returncode == 0
    wait_until(lambda: token_server.in_flight(), timeout=15, message="the delayed request")
    t0 = time.monotonic()
    _, during = scrape(port)
    assert time.monotonic() - t0 < 1.0, "a scrape must not wait for refresh work"
    assert sample(during, "oauth_refreshd_requests_in_flight") == 1
    db.execute("UPDATE oauth_accounts SET refresh_token = %s WHERE id = %s",
               (fernet_keys.encrypt("rt-from-the-application"), disc.id))
    d.wait_for_log("discarded", timeout=15)

    # Phase 3: the provider refuses our client credentials (pauses google until reload).
    key = seeder.new_account_key("google")
    token_server.inject("invalid_client", account=key, count=1)  # before the row wakes the daemon
    cfg_acct = seeder.add_account("google", account_key=key, expires_in=-60)
    events.wait_for(lambda e: e["event"] == "failed" and e["account_id"] == cfg_acct.id,
                    timeout=15)

    expected = {p: dict.fromkeys(OUTCOMES, 0) for p in PROVIDERS}
    expected["google"].update(refreshed=3, local_error=1, config_error=1)
    expected["github"].update(revoked=1, bad_response=1, refreshed=1, discarded=1)
    expected["microsoft"].update(transient=1, refreshed=1)
    answers = {"google": 4, "github": 4, "microsoft": 2}  # requests that reached a provider

    def settled():
        # A failure is counted when the answer arrives, its result written a moment later.
        _, s = scrape(port)
        return (sample(s, "oauth_refreshd_results_held") == 0
                and sample(s, "oauth_refreshd_requests_in_flight") == 0
                and all(sample(s, "oauth_refreshd_refreshes_total", provider=p, outcome=o) == n
                        for p in PROVIDERS for o, n in expected[p].items()))

    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:  # the asserts below say what differs
        time.sleep(0.1)
    body, s = scrape(port)
    for p in PROVIDERS:
        for o, n in expected[p].items():
            seen = sample(s, "oauth_refreshd_refreshes_total", provider=p, outcome=o)
            assert seen == n, f"{p}/{o}: expected {n}, saw {seen}"
        for h in ("oauth_refreshd_provider_request_duration_seconds",
                  "oauth_refreshd_expiry_margin_seconds"):
            seen = sample(s, h + "_count", provider=p)
            assert seen == answers[p], f"{h} count for {p}: expected {answers[p]}, saw {seen}"
            assert sample(s, h + "_bucket", provider=p, le="+Inf") == answers[p]
    # The delayed request took >= 2.5 s: it is in github's buckets above 2.5 only.
    assert sample(s, "oauth_refreshd_provider_request_duration_seconds_bucket",
                  provider="github", le="2.5") == answers["github"] - 1
    # Phase 1 tokens had expired a minute before: those refreshes land in le="0".
    assert sample(s, "oauth_refreshd_expiry_margin_seconds_bucket", provider="google",
                  le="0") >= 3
    assert sample(s, "oauth_refreshd_database_connected") == 1
    assert sample(s, "oauth_refreshd_requests_in_flight") == 0
    assert sample(s, "oauth_refreshd_results_held") == 0
    assert sample(s, "oauth_refreshd_provider_paused", provider="google") == 1
    assert sample(s, "oauth_refreshd_provider_paused", provider="github") == 0
    assert sample(s, "oauth_refreshd_build_info", version=body.split('version="')[1].split('"')[0]) == 1

    # The account counts come from a periodic query (every 10 s while scraped). Failing:
    # the undecryptable and the credentials-refused accounts.
    seen = []

    def counts():
        _, s2 = scrape(port)
        seen.append((s2.get(("oauth_refreshd_accounts_revoked", ())),
                     s2.get(("oauth_refreshd_accounts_failing", ()))))
        return seen[-1] == (1, 2)
    deadline = time.monotonic() + 25
    while not counts():
        assert time.monotonic() < deadline, (
            f"expected (accounts_revoked, accounts_failing) == (1, 2) within 25s; "
            f"last seen {seen[-1]}")
        time.sleep(0.5)
    due = db.scalar("SELECT count(*) FROM oauth_refreshd.account_state "
                    "WHERE due_at <= now() + interval '5 min'")
    assert abs(sample(scrape(port)[1], "oauth_refreshd_accounts_due") - due) <= 1, due
    promtool_check(body)

    d.terminate()
    assert d.returncode == 0, d.log_tail()


def totals(samples):
    """{refreshed, failed, revoked}: /metrics summed over providers, as STATUS= counts them."""
    def outcome(o):
        return sum(sample(samples, "oauth_refreshd_refreshes_total", provider=p, outcome=o)
                   for p in PROVIDERS)
    return {"refreshed": outcome("refreshed"), "revoked": outcome("revoked"),
            "failed": sum(outcome(o) for o in FAILURES)}


def test_status_exit_line_and_metrics_agree_after_successes_a_revocation_failures_and_an_overload(
        migrated_env, seeder, token_server, events):
    """One counter set (issue 13 §5): STATUS=, the exit line and /metrics say the same.
    An overload answer (429) is not the account's failure: the claim is given back and the
    account refreshed after the pause. A partial result (rotated token, unusable answer) is
    one failure, not a refresh as well."""
    ok = [seeder.add_account("google", expires_in=-60) for _ in range(2)]
    rev = seeder.add_account("github", expires_in=-60)
    token_server.revoke(rev.account_key)
    bad = seeder.add_account("github", expires_in=-60)
    token_server.inject("not_json", account=bad.account_key, count=1)
    partial = seeder.add_account("github", expires_in=-60)
    token_server.inject("rotate_broken", provider="github", account=partial.account_key, count=1,
                        breakage="no_access_token")
    over = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("429", account=over.account_key, count=1, retry_after=1)

    port = free_port()
    migrated_env.write_config({"metrics": {"listen": f"127.0.0.1:{port}"},
                               "refresh": {"retry_min": "30min", "retry_max": "1h",
                                           "scan_interval": "1h"}})
    ns = NotifySocket()
    try:
        d = notify_daemon(migrated_env, ns, name="agree")
        d.start()
        events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == over.id,
                        timeout=30)
        assert len(token_server.requests_for(over.account_key)) == 2, "the 429, then the refresh"
        want = {"refreshed": 3, "failed": 2, "revoked": 1}

        def settled():
            _, s = scrape(port)
            return (sample(s, "oauth_refreshd_results_held") == 0
                    and sample(s, "oauth_refreshd_requests_in_flight") == 0
                    and totals(s) == want)
        wait_until(settled, timeout=15, message=f"/metrics totals {want}")
        since = time.monotonic()
        m = ns.wait_status(r"^0 in flight, ", timeout=10, since=since)
        st = re.match(r"0 in flight, (\d+) refreshed, (\d+) failed, (\d+) revoked;",
                      m.get("STATUS"))
        assert st, m
        status = {"refreshed": int(st.group(1)), "failed": int(st.group(2)),
                  "revoked": int(st.group(3))}
        _, s = scrape(port)
        assert status == totals(s) == want, (status, totals(s))
        assert sample(s, "oauth_refreshd_refreshes_total", provider="microsoft",
                      outcome="transient") == 0, "a 429 is not counted as the account's failure"
        assert sample(s, "oauth_refreshd_refreshes_total", provider="github",
                      outcome="bad_response") == 2
        # Every result's claim-to-written time is in the histogram the exit line reads.
        results = sample(s, "oauth_refreshd_claim_to_written_seconds_count")
        assert results == 6, results
        d.terminate()
        assert d.returncode == 0, d.log_tail()
        log = d.log()
        ex = re.search(r"exiting: (\d+) refreshed, (\d+) failed, (\d+) revoked", log)
        assert ex and [int(x) for x in ex.groups()] == [3, 2, 1], log[-2000:]
        cw = re.search(r"claim to written: p50 ([\d.]+) ms, p90 ([\d.]+) ms, p99 ([\d.]+) ms, "
                       r"max ([\d.]+) ms \((\d+) results\)", log)
        assert cw and int(cw.group(5)) == 6, log[-2000:]
        p50, p90, p99, mx = (float(cw.group(i)) for i in range(1, 5))
        assert 0 < p50 <= p90 <= p99 <= mx, cw.group(0)
    finally:
        ns.close()


def test_reload_bookkeeping_follows_sighup(migrated_env):
    d, port = start_with_metrics(migrated_env)
    _, s = scrape(port)
    assert sample(s, "oauth_refreshd_config_generation") == 0
    assert sample(s, "oauth_refreshd_config_last_reload_successful") == 1
    started = sample(s, "oauth_refreshd_config_last_reload_success_timestamp_seconds")

    time.sleep(1.1)
    size = d.log_size()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("configuration reloaded", after=size, timeout=10)
    _, s = scrape(port)
    assert sample(s, "oauth_refreshd_config_generation") == 1
    assert sample(s, "oauth_refreshd_config_last_reload_successful") == 1
    ok_at = sample(s, "oauth_refreshd_config_last_reload_success_timestamp_seconds")
    assert ok_at > started, f"expected the success time to move past {started}, saw {ok_at}"

    good = migrated_env.config_text()
    with open(migrated_env.config_path, "a") as f:
        f.write("\n[refresh]\nno_such_key = 1\n")
    size = d.log_size()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload failed", after=size, timeout=10)
    _, s = scrape(port)
    assert sample(s, "oauth_refreshd_config_generation") == 1, "a rejected config is no generation"
    assert sample(s, "oauth_refreshd_config_last_reload_successful") == 0
    assert sample(s, "oauth_refreshd_config_last_reload_success_timestamp_seconds") == ok_at
    assert sample(s, "oauth_refreshd_config_last_reload_timestamp_seconds") > ok_at
    with open(migrated_env.config_path, "w") as f:
        f.write(good)
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_only_get_metrics_is_served(migrated_env):
    d, port = start_with_metrics(migrated_env)
    for path in ("/", "/metric", "/metrics/", "/metrics/x", "/favicon.ico"):
        status, _, _ = http(port, path)
        assert status == 404, f"GET {path}: expected 404, saw {status}"
    status, _, _ = http(port, method="POST")
    assert status == 405, f"POST /metrics: expected 405, saw {status}"
    status, ctype, body = http(port, method="HEAD")
    assert status == 200 and body == "", f"HEAD /metrics: expected 200 and no body, saw {status}"
    assert sample(parse(scrape(port)[0]), "oauth_refreshd_database_connected") == 1
    d.terminate()
    assert d.returncode == 0, d.log_tail()


def test_many_slow_clients_do_not_stop_refreshes(migrated_env, seeder, token_server, events):
    d, port = start_with_metrics(migrated_env)
    # Idle connections that never send a request must not block the loop.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    try:
        a = seeder.add_account("google", expires_in=60)
        events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == a.id,
                        timeout=15)
        # The event is sent by the write's transaction; the daemon counts on its answer.
        wait_until(lambda: sample(scrape(port)[1], "oauth_refreshd_refreshes_total",
                                  provider="google", outcome="refreshed") == 1,
                   timeout=5, message="google refreshed == 1")
    finally:
        for c in idle:
            c.close()
    d.terminate()
    assert d.returncode == 0, d.log_tail()


@pytest.mark.parametrize("listen", ["not-an-address", "127.0.0.1:99999", "127.0.0.1:",
                                    "[::1:9464"])
def test_unparseable_listen_address_refuses_to_start_with_78(migrated_env, listen):
    migrated_env.write_config({"metrics": {"listen": listen}})
    rc, log = migrated_env.run_once(timeout=30)
    assert rc == 78, f"listen = {listen!r}: expected exit 78, saw {rc}\n{log}"
    assert "[metrics] listen" in log, log


def test_busy_listen_port_refuses_to_start_with_78(migrated_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        migrated_env.write_config({"metrics": {"listen": f"127.0.0.1:{port}"}})
        rc, log = migrated_env.run_once(timeout=30)
    assert rc == 78, f"expected exit 78 on a port in use, saw {rc}\n{log}"
    assert f"cannot listen on 127.0.0.1:{port}" in log and "in use" in log, log
