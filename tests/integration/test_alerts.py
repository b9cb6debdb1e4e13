"""The shipped alerting rules and Grafana dashboard (packaging/prometheus, packaging/grafana).

promtool checks the rules and runs their unit tests (which say, case by case, what fires and
what must not); every metric the rules and the dashboard name must exist in a live daemon's
/metrics, so a renamed metric cannot silently turn an alert or a panel blind."""

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest

from lib.daemon import source_dir, wait_until

PROM_DIR = os.path.join(source_dir(), "packaging", "prometheus")
RULES = os.path.join(PROM_DIR, "oauth-refreshd.rules.yml")
RULE_TESTS = os.path.join(PROM_DIR, "oauth-refreshd.rules.test.yml")
DASHBOARD = os.path.join(source_dir(), "packaging", "grafana", "oauth-refreshd.json")
# Alerts the rules must have: one per situation an operator must hear about.
WANTED_ALERTS = {
    "OAuthRefreshdDown", "OAuthRefreshdAbsent", "OAuthRefreshdProviderPaused",
    "OAuthRefreshdRefreshFailures", "OAuthRefreshdRevocationsSpike",
    "OAuthRefreshdAccountsOverdue", "OAuthRefreshdResultsHeld", "OAuthRefreshdDatabaseDown",
    "OAuthRefreshdReloadFailed",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool():
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package prometheus) is missing: scripts/lib/deps.sh installs it"
    return tool


def metric_names(text):
    return set(re.findall(r"\boauth_refreshd_[a-z0-9_]+", text))


def exposed_family(name, exposed):
    """A name as a query uses it (e.g. a histogram's _bucket) belongs to a family the daemon
    exposes."""
    if name in exposed:
        return True
    return any(name.endswith(s) and name[: -len(s)] + s in exposed for s in HISTOGRAM_SUFFIXES)


def test_promtool_accepts_the_rules():
    p = subprocess.run([promtool(), "check", "rules", RULES], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"SUCCESS: (\d+) rules found", p.stdout)
    assert m and int(m.group(1)) == len(WANTED_ALERTS), p.stdout


def test_the_rules_unit_tests_pass():
    p = subprocess.run([promtool(), "test", "rules", RULE_TESTS], capture_output=True, text=True,
                       timeout=120, cwd=PROM_DIR)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_situation_has_an_alert_and_every_alert_a_unit_test():
    with open(RULES) as f:
        rules = f.read()
    with open(RULE_TESTS) as f:
        tests = f.read()
    alerts = set(re.findall(r"^\s*- alert: (\w+)", rules, re.M))
    assert alerts == WANTED_ALERTS, f"alerts differ: {alerts ^ WANTED_ALERTS}"
    tested = set(re.findall(r"alertname: (\w+)", tests))
    assert alerts <= tested, f"alerts without a promtool unit test: {alerts - tested}"


def test_the_dashboard_is_a_grafana_dashboard_with_a_query_per_panel():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    assert dash["uid"] == "oauth-refreshd" and dash["panels"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance", "provider"} <= names
    for panel in dash["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for t in panel["targets"]:
            assert "oauth_refreshd_" in t["expr"], (panel["title"], t["expr"])
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_metric_the_rules_and_dashboard_name_exists_in_a_live_daemon(migrated_env, seeder):
    seeder.add_account("google", expires_in=-60)
    port = free_port()
    migrated_env.write_config({"metrics": {"listen": f"127.0.0.1:{port}"}})
    d = migrated_env.daemon("metrics")
    d.start()
    d.wait_for_log("serving http://127.0.0.1", timeout=30)
    d.wait_for_log("refreshed", timeout=30)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    # The account counts come from a query the first scrape starts: wait for them.
    wait_until(lambda: "oauth_refreshd_accounts_due" in scrape(), timeout=20,
               message="the account counts in /metrics")
    exposition = scrape()
    exposed = set()
    for line in exposition.splitlines():
        m = re.match(r"# TYPE (oauth_refreshd_\w+) (\w+)", line)
        if m:
            exposed.add(m.group(1))
            if m.group(2) == "histogram":
                exposed.update(m.group(1) + s for s in HISTOGRAM_SUFFIXES)
    d.terminate()
    with open(RULES) as f:
        in_rules = metric_names(f.read())
    with open(DASHBOARD) as f:
        in_dashboard = metric_names(f.read())
    assert in_rules and in_dashboard
    missing = sorted(n for n in in_rules | in_dashboard if not exposed_family(n, exposed))
    assert not missing, (f"named by the rules or the dashboard but not exposed by the daemon: "
                         f"{missing}; exposed: {sorted(exposed)}")
