"""docs/django.md runs as written: its code in a real Django project against the daemon (issue 15).

Owns: building a small Django project in a temp dir at test time (settings pointing at
the per-test database, an `accounts` app) from the Python blocks of docs/django.md that
carry a `<!-- test: NAME -->` marker, taken out of the markdown verbatim, so the guide
and this test cannot drift; and running them with Debian's /usr/bin/python3, Django 3.2
(python3-django), psycopg2 (python3-psycopg2) and psycopg 3 (python3-psycopg) in
subprocesses with DJANGO_SETTINGS_MODULE, against oauth-refreshd built in this tree.
Django 3.2's backend is psycopg2 only, so the psycopg 3 cases run the guide's raw-driver
paths (oauth_events_worker.py, refresh_now_on) on a psycopg 3 connection.
What the test adds itself, because the guide leaves them to the application: the
settings, `accounts/fields.py` (a Fernet text field like django-encrypted-model-fields:
every save() encrypts anew) and `accounts/notify.py` (records whom it would ask to
reconnect). Must never: edit a block it takes from the guide.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from cryptography.fernet import Fernet

from lib.daemon import source_dir, wait_until
from test_rotate_keys import switch_to_new_primary

PYTHON = "/usr/bin/python3"  # Debian's, with python3-django and both drivers
GUIDE = os.path.join(source_dir(), "docs", "django.md")

# Marker name -> where the block goes in the project (its first line names that path).
BLOCKS = {
    "models": "accounts/models.py",
    "oauth-listen": "accounts/oauth_listen.py",
    "events-command": "accounts/management/commands/oauth_events.py",
    "events-psycopg3": "oauth_events_worker.py",
    "refresh-helpers": "accounts/oauth.py",
    "fernet-fields-text": "accounts/fields.py",  # only in the django-fernet-fields project
}

MARKED_BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\n```python\n(.*?)\n```\n", re.S)

FIELDS = '''
"""The application's encrypted field (not the guide's): Fernet text in a TEXT column,
like django-encrypted-model-fields. Every save() encrypts anew, as those packages do."""
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import models


def _fernet():
    return MultiFernet([Fernet(k) for k in settings.FIELD_ENCRYPTION_KEYS])


class EncryptedTextField(models.TextField):
    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else _fernet().encrypt(value.encode()).decode()

    def from_db_value(self, value, expression, connection):
        return None if value is None else _fernet().decrypt(value.encode()).decode()
'''

# A stand-in for django-fernet-fields 0.6 (not packaged by Debian): its EncryptedField as
# published, with raw keys (FERNET_USE_HKDF = False) so the daemon's keys file opens them.
FERNET_FIELDS = '''
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import models
from django.utils.encoding import force_bytes, force_str
from django.utils.functional import cached_property


class EncryptedField(models.Field):
    _internal_type = "BinaryField"

    @cached_property
    def fernet(self):
        return MultiFernet([Fernet(k) for k in settings.FIELD_ENCRYPTION_KEYS])

    def get_internal_type(self):
        return self._internal_type

    def get_db_prep_save(self, value, connection):
        value = super().get_db_prep_save(value, connection)
        if value is not None:
            retval = self.fernet.encrypt(force_bytes(value))
            return connection.Database.Binary(retval)

    def from_db_value(self, value, expression, connection, *args):
        if value is not None:
            value = bytes(value)
            return self.to_python(force_str(self.fernet.decrypt(value)))


class EncryptedTextField(EncryptedField, models.TextField):
    pass
'''

NOTIFY = '''
import os

from django.db import connection


def ask_user_to_reconnect(account):
    flag = os.environ.get("GUIDE_KILL_ONCE")  # a test: lose the connection in the handler once
    if flag and not os.path.exists(flag):
        open(flag, "w").close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    with open(os.environ["GUIDE_NOTIFY_LOG"], "a") as f:
        f.write(f"{account.id}\\n")
'''

SETTINGS = '''
SECRET_KEY = "guide-test-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["accounts"]
ROOT_URLCONF = "guidesite.urls"
MIDDLEWARE = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.postgresql", "NAME": {name!r}, "USER": {user!r},
    "HOST": {host!r}, "PORT": {port!r}, "ATOMIC_REQUESTS": {atomic!r},
    # Not oauth-test*: the fixtures' terminate_backends() kills these sessions.
    "OPTIONS": {{"application_name": "guide-django"}},
}}}}
FIELD_ENCRYPTION_KEYS = {keys!r}
OAUTH_EVENTS_RECONNECT_DELAY = 0.5
LOGGING = {{
    "version": 1,
    "handlers": {{"stderr": {{"class": "logging.StreamHandler"}}}},
    "root": {{"handlers": ["stderr"], "level": "INFO"}},
}}
'''

URLS = '''
from django.http import JsonResponse
from django.urls import path

from accounts.oauth import refresh_now


def refresh_view(request, account_id):
    return JsonResponse({"event": refresh_now(account_id, timeout=2)})


urlpatterns = [path("refresh/<int:account_id>", refresh_view)]
'''


def guide_blocks():
    with open(GUIDE) as f:
        text = f.read()
    blocks = {}
    for name, body in MARKED_BLOCK.findall(text):
        assert name not in blocks, f"docs/django.md marks two blocks `test: {name}`"
        blocks[name] = body + "\n"
    return blocks


def test_the_guide_marks_every_block_this_test_runs():
    blocks = guide_blocks()
    assert set(blocks) == set(BLOCKS), (
        f"docs/django.md marks {sorted(blocks)}, this test runs {sorted(BLOCKS)}")
    for name, path in BLOCKS.items():
        first = blocks[name].splitlines()[0]
        assert first.startswith(f"# {path}"), (
            f"block `test: {name}` must start with `# {path}`, starts with {first!r}")


def _write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text).lstrip("\n"))


class Project:
    """The Django project in a temp dir, and the ways to run code in it."""

    def __init__(self, root, db):
        self.root = root
        self.db = db
        self.notify_log = os.path.join(root, "notified.txt")
        self.procs = []

    def env(self, extra=None):
        env = dict(os.environ)
        env.update({"DJANGO_SETTINGS_MODULE": "guidesite.settings", "PYTHONPATH": self.root,
                    "GUIDE_NOTIFY_LOG": self.notify_log, "PYTHONUNBUFFERED": "1"})
        env.update(extra or {})
        return env

    def run(self, code, django=True, timeout=60, extra_env=None):
        """Runs code in a fresh interpreter (after django.setup() unless django=False); returns
        the JSON its last output line holds."""
        prelude = "import json, django\ndjango.setup()\n" if django else "import json\n"
        p = subprocess.run([PYTHON, "-c", prelude + textwrap.dedent(code)], cwd=self.root,
                           env=self.env(extra_env), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        return json.loads(p.stdout.strip().splitlines()[-1])

    def start(self, argv, name, extra_env=None):
        log = os.path.join(self.root, name + ".log")
        with open(log, "ab") as out:
            proc = subprocess.Popen([PYTHON, "-u", *argv], cwd=self.root, env=self.env(extra_env),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        runner = Runner(proc, log)
        self.procs.append(runner)
        return runner

    def events_command(self, extra_env=None):
        return self.start(["-m", "django", "oauth_events"], "oauth_events", extra_env)

    def psycopg3_worker(self):
        dsn = self.db.dsn + "?application_name=guide-worker"
        return self.start(["oauth_events_worker.py"], "worker",
                          {"DATABASE_URL": dsn, "RECONNECT_DELAY": "0.5"})

    def notified(self):
        try:
            with open(self.notify_log) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def stop(self):
        for r in self.procs:
            r.kill()


class Runner:
    def __init__(self, proc, log):
        self.proc = proc
        self.log_path = log

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_for_log(self, pattern, count=1, timeout=30):
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before logging "
                                     f"/{pattern}/:\n{self.log()}")
            return len(re.findall(pattern, self.log())) >= count
        try:
            wait_until(seen, timeout=timeout, message=f"/{pattern}/ x{count}")
        except AssertionError as e:
            raise AssertionError(f"{e}; log:\n{self.log()}") from None

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def django_available():
    p = subprocess.run([PYTHON, "-c", "import django, psycopg2, psycopg; "
                        "print(django.get_version(), psycopg2.__version__, psycopg.__version__)"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, ("Django and both drivers are needed: apt-get install python3-django "
                               f"python3-psycopg2 python3-psycopg (scripts/lib/deps.sh)\n{p.stdout}")
    print("versions:", p.stdout.strip(), file=sys.stderr)


def build_project(root, db, fernet_keys, atomic_requests=False, fernet_fields=False):
    """fernet_fields: the app uses django-fernet-fields (bytes) and the guide's field for it."""
    cluster = db.cluster
    _write(root, "guidesite/__init__.py", "")
    _write(root, "guidesite/settings.py", SETTINGS.format(
        name=db.name, user=cluster.superuser, host=cluster.host, port=str(cluster.port),
        atomic=atomic_requests, keys=[k.decode() for k in fernet_keys.keys]))
    _write(root, "guidesite/urls.py", URLS)
    for pkg in ("accounts", "accounts/management", "accounts/management/commands"):
        _write(root, pkg + "/__init__.py", "")
    _write(root, "accounts/fields.py", FIELDS)
    _write(root, "fernet_fields.py", FERNET_FIELDS)
    _write(root, "accounts/notify.py", NOTIFY)
    for name, body in guide_blocks().items():
        if name == "fernet-fields-text" and not fernet_fields:
            continue
        with open(os.path.join(root, BLOCKS[name]), "w") as f:
            f.write(body)  # verbatim
    return Project(root, db)


@pytest.fixture
def project(django_available, tmp_path, db, fernet_keys):
    p = build_project(str(tmp_path / "site"), db, fernet_keys)
    yield p
    p.stop()


def continuous(env):
    env.write_config({"refresh": {"scan_interval": "1h"}})
    d = env.daemon("continuous")
    d.start()
    d.wait_for_log("ready", timeout=30)
    return d


def start_listener(project, driver):
    runner = project.events_command() if driver == "psycopg2" else project.psycopg3_worker()
    runner.wait_for_log(r"listening on oauth_refresh_event")
    return runner


# ---- part 1: the events command and refresh_now, on both drivers -------------------------------

@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_events_arrive_and_a_killed_backend_is_survived(project, migrated_env, seeder,
                                                        token_server, db, driver):
    listener = start_listener(project, driver)

    revoked = seeder.add_account("google")
    token_server.revoke(revoked.account_key)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    listener.wait_for_log(rf"revoked: account {revoked.id} \(google\)")
    if driver == "psycopg2":  # the command looks the account up and asks the user
        wait_until(lambda: project.notified() == [revoked.id], timeout=10,
                   message="ask_user_to_reconnect for the revoked account")

    # pg_terminate_backend: the driver raises its own OperationalError; the loop reconnects.
    assert db.cluster.terminate_backends(db.name) >= 1, "the listener's session was not found"
    listener.wait_for_log(r"lost the database connection")
    listener.wait_for_log(r"listening on oauth_refresh_event", count=2)

    refreshed = seeder.add_account("github")
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    listener.wait_for_log(rf"refreshed: account {refreshed.id} \(github\)")
    assert listener.proc.poll() is None, "the listener must keep running"


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_revocations_missed_while_not_listening_are_caught_up(project, migrated_env, seeder,
                                                               token_server, driver):
    a = seeder.add_account("microsoft")
    token_server.revoke(a.account_key)
    rc, log = migrated_env.run_once()  # nobody listens: the NOTIFY is gone
    assert rc == 0, log
    listener = start_listener(project, driver)
    listener.wait_for_log(r"caught up 1 revocation")
    listener.wait_for_log(rf"revoked: account {a.id} \(microsoft\)")
    if driver == "psycopg2":
        wait_until(lambda: project.notified() == [a.id], timeout=10, message="caught-up notify")


def test_a_connection_lost_in_the_handler_is_survived_and_caught_up(project, migrated_env, seeder,
                                                                    token_server, tmp_path):
    # The command's ORM query dies (django.db.OperationalError, not the driver's): it must
    # reconnect, and the catch-up brings the revocation whose handling was cut short.
    listener = project.events_command({"GUIDE_KILL_ONCE": str(tmp_path / "killed")})
    listener.wait_for_log(r"listening on oauth_refresh_event")
    a = seeder.add_account("google")
    token_server.revoke(a.account_key)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    listener.wait_for_log(r"lost the database connection")
    listener.wait_for_log(r"caught up 1 revocation")
    wait_until(lambda: project.notified() == [a.id], timeout=10,
               message="the revocation handled after the reconnect")
    assert (tmp_path / "killed").exists()


REFRESH_NOW_PSYCOPG2 = """
    from accounts.oauth import refresh_now
    print(json.dumps(refresh_now({id}, timeout=20)))
"""

REFRESH_NOW_PSYCOPG3 = """
    import os
    import psycopg
    from accounts.oauth_listen import refresh_now_on
    with psycopg.connect(os.environ["GUIDE_DSN"], autocommit=True) as conn:
        print(json.dumps(refresh_now_on(conn, {id}, timeout=20)))
"""


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_refresh_now_is_answered_outside_a_transaction(project, migrated_env, seeder,
                                                       token_server, db, driver):
    a = seeder.add_account("github", expires_in=7200)  # not due: only the request refreshes it
    d = continuous(migrated_env)
    code = REFRESH_NOW_PSYCOPG2 if driver == "psycopg2" else REFRESH_NOW_PSYCOPG3
    event = project.run(code.format(id=a.id), django=driver == "psycopg2",
                        extra_env={"GUIDE_DSN": db.dsn})
    assert event is not None and event["event"] == "refreshed" and event["account_id"] == a.id, event
    assert seeder.read(a.id)["access_token"] in token_server.issued_access_tokens(a.account_key)
    d.terminate()


REFUSED_IN_ATOMIC = """
    import time
    from django.db import transaction
    from accounts.oauth import refresh_now
    from accounts.oauth_listen import RefreshNowInTransaction
    t0 = time.monotonic()
    try:
        with transaction.atomic():
            refresh_now({id}, timeout=10)
        print(json.dumps(None))
    except RefreshNowInTransaction as e:
        print(json.dumps([str(e), time.monotonic() - t0]))
"""

REFUSED_IN_ATOMIC_REQUEST = """
    import time
    from django.test import Client
    from accounts.oauth_listen import RefreshNowInTransaction
    t0 = time.monotonic()
    try:
        Client().get("/refresh/{id}")
        print(json.dumps(None))
    except RefreshNowInTransaction as e:
        print(json.dumps([str(e), time.monotonic() - t0]))
"""

REFUSED_PSYCOPG3 = """
    import os, time
    import psycopg
    from accounts.oauth_listen import RefreshNowInTransaction, refresh_now_on
    t0 = time.monotonic()
    with psycopg.connect(os.environ["GUIDE_DSN"]) as conn:  # autocommit off
        try:
            refresh_now_on(conn, {id}, timeout=10)
            print(json.dumps(None))
        except RefreshNowInTransaction as e:
            print(json.dumps([str(e), time.monotonic() - t0]))
"""


@pytest.mark.parametrize("where", ["atomic", "atomic_requests", "psycopg3"])
def test_refresh_now_refuses_plainly_inside_a_transaction(django_available, tmp_path, db,
                                                          fernet_keys, migrated_env, seeder,
                                                          token_server, where):
    project = build_project(str(tmp_path / "site"), db, fernet_keys,
                            atomic_requests=where == "atomic_requests")
    a = seeder.add_account("github", expires_in=7200)
    d = continuous(migrated_env)
    code = {"atomic": REFUSED_IN_ATOMIC, "atomic_requests": REFUSED_IN_ATOMIC_REQUEST,
            "psycopg3": REFUSED_PSYCOPG3}[where]
    got = project.run(code.format(id=a.id), django=where != "psycopg3",
                      extra_env={"GUIDE_DSN": db.dsn})
    assert got is not None, "refresh_now inside a transaction must raise RefreshNowInTransaction"
    message, seconds = got
    assert "COMMIT" in message and "transaction" in message, message
    assert seconds < 5, f"it must refuse at once, not wait for its timeout ({seconds:.1f}s)"
    time.sleep(1)
    assert token_server.requests_for(a.account_key) == [], "nothing may be requested"
    d.terminate()


# ---- part 2: a save() is not a new token --------------------------------

RESAVE = """
    from accounts.models import OAuthAccount
    account = OAuthAccount.objects.get(id={id})
    before = account.refresh_token
    account.save()  # the encrypted fields write new ciphertexts of the same plaintexts
    print(json.dumps(before))
"""


def state_of(db, account_id):
    row = db.execute("SELECT revoked, lease_owner, refresh_count FROM oauth_refreshd.account_state "
                     "WHERE account_id = %s", (account_id,))[0]
    return dict(zip(("revoked", "lease_owner", "refresh_count"), row))


def test_a_save_during_a_refresh_keeps_the_providers_newest_token(project, migrated_env, seeder,
                                                                  token_server, db, events):
    a = seeder.add_account("github")  # rotates at every refresh; the old token dies at once
    before = seeder.row(a.id)["refresh_token"]
    token_server.hold()
    d = continuous(migrated_env)
    try:
        wait_until(lambda: token_server.in_flight() >= 1, timeout=20, message="a request in flight")
        assert project.run(RESAVE.format(id=a.id)) == a.refresh_token
        assert seeder.row(a.id)["refresh_token"] != before, "save() must write a new ciphertext"
    finally:
        token_server.release()
    # Today the daemon discards its result (the ciphertext changed), takes the re-saved old
    # token for a new one and tries it: the provider says it is dead (revoked).
    events.wait_for(lambda e: e["account_id"] == a.id, timeout=20)
    assert token_server.current_refresh_token(a.account_key) != a.refresh_token, "it rotated"
    wait_until(lambda: seeder.read(a.id)["refresh_token"]
               == token_server.current_refresh_token(a.account_key), timeout=10,
               message="the provider's newest refresh token in the row")
    newest = token_server.current_refresh_token(a.account_key)
    got = project.run("""
        from accounts.models import OAuthAccount
        print(json.dumps(OAuthAccount.objects.get(id=%d).refresh_token))
    """ % a.id)
    assert got == newest, "the row must hold the provider's newest refresh token, not the re-saved old one"
    d.terminate()


def test_a_save_of_a_revoked_account_does_not_lift_the_revocation(project, migrated_env, seeder,
                                                                  token_server, db, events):
    a = seeder.add_account("github")
    token_server.revoke(a.account_key)
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    events.wait_for(lambda e: e["account_id"] == a.id and e["event"] == "revoked", timeout=10)
    token_server.clear_requests()
    project.run(RESAVE.format(id=a.id))
    assert state_of(db, a.id)["revoked"] is True, "re-saving the same refresh token is no new token"
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    assert token_server.requests_for(a.account_key) == [], "the dead token must not be tried again"
    time.sleep(0.5)
    assert len(events.events_for(a.id, "revoked")) == 1, events.events_for(a.id)


# ---- part 2 of the guide: the models it gives ---------------------------------------------------

def test_the_guides_models_read_what_the_daemon_wrote(project, migrated_env, seeder,
                                                      token_server):
    token_server.set_expires_in("github", 28800)
    a = seeder.add_account("github", scope="")
    rc, log = migrated_env.run_once()
    assert rc == 0, log
    got = project.run("""
        from accounts.models import OAuthAccount
        a = OAuthAccount.objects.select_related("user", "refresh_state").get(id=%d)
        print(json.dumps({"access_token": a.access_token, "scope": a.scope,
                          "token_type": a.token_type, "tz": str(a.expires_at.tzinfo),
                          "user": a.user.username, "refreshes": a.refresh_state.refresh_count,
                          "revoked": a.refresh_state.revoked}))
    """ % a.id)
    assert got["access_token"] in token_server.issued_access_tokens(a.account_key), got
    assert got["scope"] == "" and got["token_type"] == "bearer", got  # GitHub's answer verbatim
    assert got["tz"] == "UTC" and got["refreshes"] == 1 and got["revoked"] is False, got


# ---- part 3: django-fernet-fields' bytes in the TEXT columns --------------------------------------

CREATE_WITH_BYTES = """
    from datetime import timedelta
    from django.utils import timezone
    from accounts.models import AppUser, OAuthAccount
    user = AppUser.objects.create(username="fernet-fields", email="ff@example.test",
                                  password_hash="x", first_name="F", last_name="F",
                                  date_joined=timezone.now())
    account = OAuthAccount.objects.create(
        user=user, provider="github", provider_account_id="{key}", access_token="at-first",
        refresh_token="{rt}", expires_at=timezone.now() - timedelta(minutes=1), scope="")
    print(json.dumps(account.id))
"""

READ_TOKENS = """
    from accounts.models import OAuthAccount
    a = OAuthAccount.objects.get(id={id})
    print(json.dumps([a.access_token, a.refresh_token]))
"""


def test_a_bytes_storing_field_round_trips_through_refreshes(django_available, tmp_path, db,
                                                             fernet_keys, migrated_env,
                                                             token_server, events):
    project = build_project(str(tmp_path / "site"), db, fernet_keys, fernet_fields=True)
    key = "github-fernet-fields"
    rt = token_server.issue("github", key)
    aid = project.run(CREATE_WITH_BYTES.format(key=key, rt=rt))
    stored = db.scalar("SELECT refresh_token FROM oauth_accounts WHERE id = %s", (aid,))
    assert stored.startswith("\\x6741414141"), f"the driver writes the bytea literal: {stored[:20]}"

    for n in (1, 2):
        rc, log = migrated_env.run_once()
        assert rc == 0, log
        events.wait_for(lambda e: e["account_id"] == aid, count=n, timeout=10)
        assert [e["event"] for e in events.events_for(aid)] == ["refreshed"] * n, events.events
        row = db.execute("SELECT access_token, refresh_token FROM oauth_accounts WHERE id = %s",
                         (aid,))[0]
        assert all(c.startswith("\\x6741414141") for c in row), "written back in the row's form"
        access, refresh = project.run(READ_TOKENS.format(id=aid))
        assert access in token_server.issued_access_tokens(key)
        assert refresh == token_server.current_refresh_token(key) != rt
        db.execute("UPDATE oauth_accounts SET expires_at = now() - interval '1 minute' "
                   "WHERE id = %s", (aid,))

    # The operator's tools read the same form: decrypt, and rotate-keys keeps it.
    p = migrated_env.ctl("decrypt", input=db.scalar(
        "SELECT refresh_token FROM oauth_accounts WHERE id = %s", (aid,)))
    assert p.returncode == 0 and p.stdout.decode() == token_server.current_refresh_token(key), \
        p.stderr

    new_keys = switch_to_new_primary(migrated_env, fernet_keys)
    p = migrated_env.ctl("rotate-keys")
    assert p.returncode == 0, p.stderr
    row = db.execute("SELECT access_token, refresh_token FROM oauth_accounts WHERE id = %s",
                     (aid,))[0]
    assert all(c.startswith("\\x6741414141") for c in row), "rotate-keys keeps the row's form"
    assert new_keys.decrypt(bytes.fromhex(row[1][2:])) == token_server.current_refresh_token(key)
    Fernet(new_keys.primary).decrypt(bytes.fromhex(row[1][2:]))  # under the new primary
