"""Fixtures every integration test stands on.

Session-scoped: `pg_cluster` (a throwaway PostgreSQL 15 with the application's
schema in template app_template), `pki` (test CAs and certificates made now).
Per test: `db` (a fresh database cloned from the template), `token_server` (a
loopback HTTPS server speaking the three provider dialects; see
tests/tokenserver/tokenserver.py), `token_server_factory` (more servers, e.g. one
with a certificate from an unrelated CA), `fernet_keys`, `seeder` (Fernet-
encrypted accounts the token server knows), `daemon_env` (config + runners for
oauth-refreshd and oauth-refreshctl), `migrated_env` (daemon_env after
`oauth-refreshctl migrate`), `events` (NOTIFY payloads on oauth_refresh_event).

Typical use:

    def test_due_google_account_is_refreshed(migrated_env, seeder, token_server, events):
        acct = seeder.add_account("google", expires_in=-60)
        rc, log = migrated_env.run_once()
        assert rc == 0, log
        assert seeder.read(acct.id)["access_token"] in token_server.issued_access_tokens(acct.account_key)

This file owns fixture wiring only; the helpers live in lib/ and must stay usable
without pytest (scripts/lib/tryit.py drives them too).
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tokenserver"))

from lib import daemon as daemon_mod  # noqa: E402
from lib.daemon import DaemonEnv, source_dir, build_dir  # noqa: E402,F401
from lib.listen import NotifyListener  # noqa: E402
from lib.pgcluster import PgCluster  # noqa: E402
from lib.pki import make_pki  # noqa: E402
from lib.seed import FernetKeys, Seeder  # noqa: E402
from tokenserver import TokenServer  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see whether their test failed (to print daemon logs).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture(scope="session")
def oauth_source_dir():
    return source_dir()


@pytest.fixture(scope="session")
def oauth_build_dir():
    return build_dir()


@pytest.fixture(scope="session")
def pg_cluster(oauth_source_dir):
    cluster = PgCluster(schema_file=os.path.join(oauth_source_dir, "tests", "fixtures",
                                                 "django-schema.sql"))
    try:
        cluster.init().start().load_template()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def db(pg_cluster):
    database = pg_cluster.create_database()
    yield database
    if not pg_cluster.running:  # a fault test left it stopped
        pg_cluster.start()
    database.drop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def token_server_factory(pki):
    servers = []

    def make(cert=None, key=None, **kw):
        s = TokenServer(cert=cert or pki.cert_file, key=key or pki.key_file, **kw)
        s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def token_server(token_server_factory):
    return token_server_factory()


@pytest.fixture
def fernet_keys(tmp_path):
    keys = FernetKeys()
    keys.write(str(tmp_path / "seed-fernet.keys"))
    return keys


@pytest.fixture
def seeder(db, fernet_keys, token_server):
    return Seeder(db, fernet_keys, token_server)


@pytest.fixture
def daemon_env(request, tmp_path, db, fernet_keys, token_server, pki):
    os.makedirs(tmp_path / "daemon", exist_ok=True)
    env = DaemonEnv(str(tmp_path / "daemon"), db.dsn, fernet_keys, token_server=token_server,
                    ca_file=pki.ca_file)
    yield env
    env.cleanup(dump_logs=_failed(request))


@pytest.fixture
def migrated_env(daemon_env):
    daemon_env.migrate()
    return daemon_env


@pytest.fixture
def events(db):
    listener = NotifyListener(db.dsn, "oauth_refresh_event").start()
    yield listener
    listener.stop()


@pytest.fixture
def listen_factory(db):
    listeners = []

    def make(channel):
        lst = NotifyListener(db.dsn, channel).start()
        listeners.append(lst)
        return lst

    yield make
    for lst in listeners:
        lst.stop()


# Re-exported for tests: `from conftest import wait_until` is awkward, so tests may use
# `from lib.daemon import wait_until`.
wait_until = daemon_mod.wait_until
