"""The daemon as a least-privilege database role, and SQL objects that other roles cannot
steer.

`oauth-refreshctl grants ROLE | psql APP_DB` is the whole set-up of the daemon's role: its
own schema, SELECT on the columns of oauth_accounts it reads, UPDATE on only the columns it
writes, nothing on users, user_profiles or the auth tables. The daemon and oauth-refreshctl
then run as that role. Every function of the schema pins its search_path (PostgreSQL's
advice for code that other roles run: the trigger runs as whoever writes oauth_accounts),
and EXECUTE is not granted to PUBLIC, so a role that plants look-alike objects in public
changes nothing.
"""

import datetime
import secrets
import subprocess

import psycopg
import pytest

from lib.daemon import run_ctl


@pytest.fixture
def daemon_role(pg_cluster):
    name = f"refreshd_{secrets.token_hex(4)}"
    pg_cluster.admin(f'CREATE ROLE "{name}" LOGIN')
    yield name
    for dbname in [r[0] for r in pg_cluster.admin(
            "SELECT datname FROM pg_database WHERE datname LIKE 't%'")]:
        try:
            with pg_cluster.connect(dbname) as c:
                c.execute(f'DROP OWNED BY "{name}"')
        except psycopg.Error:
            pass
    pg_cluster.admin(f'DROP ROLE IF EXISTS "{name}"')


def role_dsn(db, role):
    c = db.cluster
    return f"postgresql://{role}@{c.host}:{c.port}/{db.name}"


def apply_grants(migrated_env, db, role):
    """The documented set-up: oauth-refreshctl grants ROLE | psql APP_DB."""
    p = run_ctl("grants", role)
    assert p.returncode == 0, p.stderr
    sql = p.stdout.decode()
    assert f'GRANT USAGE ON SCHEMA oauth_refreshd TO "{role}"' in sql
    psql = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", db.dsn], input=sql,
                          capture_output=True, text=True, timeout=60)
    assert psql.returncode == 0, f"psql refused the grants:\n{psql.stderr}\n{sql}"
    return sql


def as_role(db, role):
    return psycopg.connect(role_dsn(db, role), autocommit=True)


def test_grants_rejects_a_missing_or_unsafe_role_name():
    assert run_ctl("grants").returncode == 64
    assert run_ctl("grants", "a", "b").returncode == 64
    assert run_ctl("grants", "").returncode == 64
    p = run_ctl("grants", 'we"ird')
    assert p.returncode == 0 and 'TO "we""ird"' in p.stdout.decode(), "identifiers are quoted"


def test_the_daemon_runs_as_its_role_and_can_do_nothing_else(
        migrated_env, seeder, token_server, events, db, daemon_role):
    apply_grants(migrated_env, db, daemon_role)
    migrated_env.write_config({"database": {"conninfo": role_dsn(db, daemon_role)},
                               "refresh": {"retry_min": "1s"}})
    ok = [seeder.add_account(p, expires_in=-60) for p in ("google", "github", "microsoft")]
    gone = seeder.add_account("github", expires_in=-60)
    token_server.revoke(gone.account_key)
    flaky = seeder.add_account("microsoft", expires_in=-60)
    token_server.inject("http503", account=flaky.account_key, count=1)

    rc, log = migrated_env.run_once()
    assert rc == 1, log  # the 503 is a failed attempt
    assert "permission denied" not in log, log
    for a in ok:
        row = seeder.read(a.id)
        assert row["refresh_token"] == token_server.current_refresh_token(a.account_key)
    events.wait_for(lambda e: e["event"] == "revoked" and e["account_id"] == gone.id, timeout=10)
    events.wait_for(lambda e: e["event"] == "failed" and e["account_id"] == flaky.id, timeout=10)
    # oauth-refreshctl works as the same role.
    st = migrated_env.ctl("status", "--json")
    assert st.returncode == 0, st.stderr
    assert migrated_env.ctl("refresh", ok[0].id).returncode == 0

    with as_role(db, daemon_role) as c:
        for sql in ("SELECT * FROM users", "SELECT password_hash FROM users",
                    "SELECT * FROM user_profiles", "SELECT * FROM auth_permission",
                    "SELECT provider_account_id FROM oauth_accounts",
                    "SELECT created_at FROM oauth_accounts",
                    "UPDATE oauth_accounts SET user_id = user_id",
                    "UPDATE oauth_accounts SET provider = provider",
                    "UPDATE oauth_accounts SET provider_account_id = 'x'",
                    "DELETE FROM oauth_accounts",
                    "INSERT INTO users (username) VALUES ('x')",
                    "DROP TABLE oauth_refreshd.account_state",
                    "CREATE TABLE oauth_refreshd.x (i int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="permission denied|must be owner"):
                c.execute(sql)
        # What it needs, it has.
        c.execute("SELECT id, provider, refresh_token, scope, expires_at FROM oauth_accounts")
        c.execute("SELECT count(*) FROM oauth_refreshd.account_state")


def test_every_function_pins_its_search_path_and_public_cannot_execute(migrated_env, db):
    rows = db.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, p.prosqlbody IS NOT NULL, "
        "       has_function_privilege('public', p.oid, 'EXECUTE') "
        "  FROM pg_proc p WHERE p.pronamespace = 'oauth_refreshd'::regnamespace")
    assert len(rows) >= 10
    # A SQL-standard body (BEGIN ATOMIC) is bound when created: no search_path reaches it.
    unpinned = [f for f, cfg, bound, _ in rows
                if not bound and "search_path=pg_catalog, pg_temp" not in (cfg or [])]
    assert not unpinned, f"functions without a pinned search_path: {unpinned}"
    public = [f for f, _, _, pub in rows if pub]
    assert not public, f"PUBLIC may execute: {public}"


def test_look_alike_objects_in_public_change_nothing(migrated_env, seeder, token_server, db,
                                                     pg_cluster, events):
    """A role that can create in public plants objects named like the ones the trigger and
    the daemon's functions use; a writer whose search_path puts public first (as a careless
    application might) must still get the real ones."""
    mallory = f"mallory_{secrets.token_hex(4)}"
    pg_cluster.admin(f'CREATE ROLE "{mallory}" LOGIN')
    try:
        db.execute(f'GRANT CREATE, USAGE ON SCHEMA public TO "{mallory}"')
        with psycopg.connect(role_dsn(db, mallory), autocommit=True) as c:
            c.execute("CREATE TABLE public.hijacked (what text)")
            c.execute("GRANT INSERT ON public.hijacked TO PUBLIC")
            for fn in ("pg_notify(a text, b text) RETURNS void",
                       "set_config(a text, b text, c boolean) RETURNS text",
                       "current_setting(a text, b boolean) RETURNS text",
                       "to_json(a text) RETURNS json",
                       "now() RETURNS timestamptz"):
                name = fn.split("(")[0]
                ret = fn.rsplit("RETURNS ", 1)[1]
                body = {"void": "", "text": "RETURN 'x';", "json": "RETURN '1'::json;",
                        "timestamptz": "RETURN '2000-01-01';"}[ret]
                c.execute(f"CREATE FUNCTION public.{fn} LANGUAGE plpgsql AS $$ BEGIN "
                          f"INSERT INTO public.hijacked VALUES ('{name}'); {body} END $$")
        # The application writes with public first on its search_path.
        conn = db.conn()
        conn.execute("SET search_path = public, pg_catalog")
        acct = seeder.add_account("google", expires_in=-60)
        # (The statement itself names nothing public could stand in for.)
        conn.execute("UPDATE oauth_accounts SET expires_at = %s WHERE id = %s",
                     (acct.expires_at - datetime.timedelta(minutes=2), acct.id))
        rc, log = migrated_env.run_once()
        assert rc == 0, log
        assert seeder.read(acct.id)["refresh_token"] == \
            token_server.current_refresh_token(acct.account_key)
        events.wait_for(lambda e: e["event"] == "refreshed" and e["account_id"] == acct.id)
        called = db.execute("SELECT what FROM public.hijacked")
        assert called == [], f"look-alike objects in public were called: {called}"
    finally:
        db.execute(f'DROP OWNED BY "{mallory}"')
        pg_cluster.admin(f'DROP ROLE IF EXISTS "{mallory}"')
