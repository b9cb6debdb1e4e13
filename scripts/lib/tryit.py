#!/usr/bin/python3
"""The try-it driver (scripts/try-it runs it after building).

Owns one throwaway world: a PostgreSQL 15 cluster running as `postgres` with the
application's schema and a few dozen demo accounts (tokens Fernet-encrypted with
Python's cryptography), the loopback HTTPS token server (standalone process),
test certificates, a generated config; then runs `oauth-refreshctl migrate`,
`oauth-refreshd --check-config` and oauth-refreshd in the foreground until
Ctrl-C (or for $TRYIT_SECONDS), prints what happened and removes everything.
Must never: fake a step that did not succeed, or leave a process or directory
behind.
"""

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "tokenserver"))

from lib.daemon import DaemonEnv, clean_env  # noqa: E402
from lib.pgcluster import PgCluster, free_port  # noqa: E402
from lib.pki import make_pki  # noqa: E402
from lib.seed import FernetKeys, Seeder  # noqa: E402
from tokenserver import DEFAULT_CLIENTS, TokenServer  # noqa: E402


def say(msg):
    print(f"try-it: {msg}", flush=True)


class ServerRef:
    """What DaemonEnv needs to know about the standalone token server."""

    def __init__(self, port):
        self.port = port
        self.clients = dict(DEFAULT_CLIENTS)
        self._urls = TokenServer(port=port)

    def token_url(self, provider, tenant="common"):
        self._urls.port = self.port
        return self._urls.token_url(provider, tenant=tenant)


class Registry:
    """Collects the demo accounts' refresh tokens for the server's seed file."""

    def __init__(self):
        self.accounts = []

    def issue(self, provider, key, scope=None):
        prefix = {"google": "1//0g", "github": "ghr_", "microsoft": "M.C5"}[provider]
        rt = prefix + os.urandom(24).hex()
        self.accounts.append({"provider": provider, "account": key, "refresh_token": rt,
                              "scope": scope})
        return rt


def seed_demo(db, keys, registry):
    """36 accounts: some due now, some due over the next minutes, one revoked, one that
    is not refreshable (a GitHub OAuth App token)."""
    seeder = Seeder(db, keys, registry)
    rnd = random.Random(7)
    made = []
    for i, provider in enumerate(["google", "github", "microsoft"] * 11):
        if i < 15:
            expires_in = rnd.randint(-600, 120)           # due now (lead_time 5 min)
        else:
            expires_in = 300 + (i - 14) * 15 + rnd.randint(0, 5)  # due one by one, ~every 15 s
        made.append(seeder.add_account(provider, f"demo-{provider}-{i:02d}", expires_in=expires_in))
    revoked = seeder.add_account("github", "demo-github-revoked", expires_in=-30)
    registry.accounts[-1]["revoked"] = True
    seeder.add_account("github", "demo-github-oauth-app", refresh_token=None, expires_in=None)
    seeder.add_account("google", "demo-google-later", expires_in=6 * 3600)
    return made + [revoked]


def run(cmd, env=None, timeout=120):
    if not os.access(cmd[0], os.X_OK):
        return 127, f"{cmd[0]}: not built"
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=clean_env(env), timeout=timeout)
    return p.returncode, p.stdout


def admin(port, ca_file, what):
    ctx = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/_admin/{what}", context=ctx,
                                timeout=5) as r:
        return json.loads(r.read())


def report(db, keys, port, ca_file):
    try:
        summary = admin(port, ca_file, "summary")
        accounts = admin(port, ca_file, "accounts")
        violations = admin(port, ca_file, "violations")
    except Exception as e:
        say(f"token server did not answer its summary: {e}")
        return
    say(f"token server saw {summary['requests']} request(s): {summary['outcomes']}; "
        f"double-refresh/stale-token violations: {len(violations)}")
    rows = db.execute("SELECT provider_account_id, refresh_token, expires_at FROM oauth_accounts "
                      "WHERE refresh_token IS NOT NULL AND expires_at IS NOT NULL")
    now = datetime.datetime.now(datetime.timezone.utc)
    in_sync = fresh = 0
    for key, token, expires_at in rows:
        acct = accounts.get(key)
        try:
            plain = keys.decrypt(token)
        except Exception:
            plain = None
        if acct and not acct["revoked"] and plain == acct["current_refresh_token"]:
            in_sync += 1
        if expires_at > now + datetime.timedelta(minutes=5):
            fresh += 1
    say(f"{fresh}/{len(rows)} refreshable accounts are fresh (expire in more than 5 min); "
        f"{in_sync}/{len(rows)} hold the refresh token the provider considers valid "
        f"(the revoked demo account cannot)")


LIVE_SQL = """
SELECT a.provider,
       count(*) FILTER (WHERE a.expires_at > now() + interval '5 minutes' AND NOT s.revoked),
       count(*) FILTER (WHERE s.last_error IS NOT NULL AND NOT s.revoked),
       count(*) FILTER (WHERE s.revoked),
       count(*),
       min(s.due_at) FILTER (WHERE s.due_at IS NOT NULL AND NOT s.revoked)
  FROM oauth_accounts a JOIN oauth_refreshd.account_state s ON s.account_id = a.id
 WHERE a.refresh_token IS NOT NULL AND a.expires_at IS NOT NULL
 GROUP BY a.provider ORDER BY a.provider"""


def live_line(db, lead_s=300):
    """One readable line of what the daemon has done so far, straight from the database."""
    try:
        rows = db.execute(LIVE_SQL)
    except Exception as e:
        return f"(live view unavailable: {e.__class__.__name__})"
    now = datetime.datetime.now(datetime.timezone.utc)
    parts = []
    next_due = None
    for provider, fresh, failing, revoked, total, due in rows:
        part = f"{provider} {fresh}/{total} fresh"
        if failing:
            part += f", {failing} failing"
        if revoked:
            part += f", {revoked} revoked"
        parts.append(part)
        if due is not None:
            at = due - datetime.timedelta(seconds=lead_s)
            next_due = at if next_due is None or at < next_due else next_due
    if next_due is None:
        nxt = "nothing due"
    else:
        secs = (next_due - now).total_seconds()
        nxt = "accounts due now" if secs <= 0 else f"next due in {secs:.0f}s"
    return "live: " + "; ".join(parts) + f"; {nxt}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that clean-up runs."""


def _sigterm_cb(signum, frame):
    raise Terminated()


def main():
    signal.signal(signal.SIGTERM, _sigterm_cb)
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("TRYIT_SECONDS", 0) or 0),
                    help="stop the daemon after this long (0: run until Ctrl-C)")
    args = ap.parse_args()
    daemon_bin = os.path.join(args.build_dir, "oauth-refreshd")
    ctl_bin = os.path.join(args.build_dir, "oauth-refreshctl")

    work = tempfile.mkdtemp(prefix="oauth-tryit-")
    os.chmod(work, 0o755)
    cluster = None
    db = None
    server = None
    exit_code = 1
    try:
        say(f"working directory {work}")
        cluster = PgCluster(schema_file=os.path.join(ROOT, "tests", "fixtures", "django-schema.sql"))
        cluster.init().start().load_template()
        db = cluster.create_database("app")
        say(f"PostgreSQL 15 running as user {cluster.os_user} at {db.dsn}")

        pki_dir = os.path.join(work, "pki")
        os.makedirs(pki_dir)
        pki = make_pki(pki_dir)
        keys = FernetKeys()
        registry = Registry()
        seeded = seed_demo(db, keys, registry)
        total = db.scalar("SELECT count(*) FROM oauth_accounts")
        say(f"seeded {total} demo accounts (google, github, microsoft; tokens Fernet-encrypted; "
            f"{sum(1 for a in seeded if a.expires_at and a.expires_at.timestamp() < time.time() + 300)}"
            f" due now, one revoked, one not refreshable)")

        seed_file = os.path.join(work, "tokenserver-seed.json")
        with open(seed_file, "w") as f:
            json.dump({"accounts": registry.accounts}, f)
        port = free_port()
        server_log = open(os.path.join(work, "tokenserver.log"), "w")
        server = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "tokenserver", "tokenserver.py"),
             "--port", str(port), "--cert", pki.cert_file, "--key", pki.key_file,
             "--seed-file", seed_file, "--quiet"],
            stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                admin(port, pki.ca_file, "summary")
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the token server did not start; see tokenserver.log")
                time.sleep(0.1)
        say(f"HTTPS token server (google, github, microsoft dialects) at https://127.0.0.1:{port}")

        env_dir = os.path.join(work, "daemon")
        os.makedirs(env_dir)
        env = DaemonEnv(env_dir, db.dsn, keys, token_server=ServerRef(port), ca_file=pki.ca_file)
        env.write_config({"daemon": {"log_level": "debug"}, "refresh": {"jitter": "10s"}})
        say(f"config written to {env.config_path}")

        rc, out = run([ctl_bin, "-c", env.config_path, "migrate"])
        if rc == 0:
            say("oauth-refreshctl migrate: done")
        else:
            say(f"oauth-refreshctl migrate FAILED (exit {rc}):")
            print(out.rstrip(), flush=True)

        rc, out = run([daemon_bin, "-c", env.config_path, "--check-config"])
        print(out.rstrip(), flush=True)
        if rc != 0:
            say(f"oauth-refreshd --check-config FAILED (exit {rc})")
            return 1
        say("oauth-refreshd --check-config: OK")

        how = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        say(f"starting oauth-refreshd in the foreground {how}; its log follows")
        print("-" * 78, flush=True)
        proc = subprocess.Popen([daemon_bin, "-c", env.config_path], env=clean_env())
        stopped_by_us = False
        try:
            # Every few seconds a line of what has happened so far, between the
            # daemon's own log lines.
            deadline = time.monotonic() + args.seconds if args.seconds else None
            while proc.poll() is None:
                step = 4.0
                if deadline is not None:
                    step = min(step, max(0.0, deadline - time.monotonic()))
                try:
                    proc.wait(step)
                    break
                except subprocess.TimeoutExpired:
                    pass
                say(live_line(db))
                if deadline is not None and time.monotonic() >= deadline:
                    stopped_by_us = True
                    proc.send_signal(signal.SIGTERM)
                    break
            rc = proc.wait()
        except KeyboardInterrupt as e:
            stopped_by_us = True
            if isinstance(e, Terminated):
                proc.send_signal(signal.SIGTERM)
            # else: the terminal sent SIGINT to the daemon as well
            try:
                rc = proc.wait(30)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                rc = proc.wait()
        print("-" * 78, flush=True)
        if stopped_by_us and rc == 0:
            say("oauth-refreshd stopped cleanly")
            exit_code = 0
        elif stopped_by_us:
            say(f"oauth-refreshd exited {rc} when asked to stop")
        else:
            say(f"oauth-refreshd exited by itself with status {rc}")
        report(db, keys, port, pki.ca_file)
        return exit_code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        say("cleaning up")
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if db is not None:
            db.close()
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
