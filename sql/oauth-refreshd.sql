-- oauth-refreshd's own SQL objects (SPEC §5), schema version 3.
--
-- Version 3: account_state keeps the account's provider (set by the trigger)
-- and claims walk account_state_claim_idx (provider, due_at), so a claim reads
-- only its own provider's due rows however large the other providers'
-- backlog is. On a large table the backfill of the new column and the new
-- indexes are left to `oauth-refreshctl migrate`, which does them online
-- (batches, concurrent index builds); until then the rows without a provider
-- are claimed through the old due index, so nothing is missed meanwhile.
--
-- Version 2: store_refreshed() takes p_error and p_retry_at (partial results:
-- a rotated refresh token from an answer that is otherwise unusable);
-- store_revoked() takes p_tags and account_state remembers the revoked
-- token's keyed tag (a re-save of the same token lifts no revocation).
--
-- Everything the daemon needs lives in the schema oauth_refreshd; the
-- application's tables are only read, plus the token columns, expires_at,
-- scope, token_type and updated_at of public.oauth_accounts, which the
-- daemon updates with a compare-and-swap on the refresh token it used.
--
-- This file is applied by `oauth-refreshctl migrate` in one transaction under
-- an advisory lock. Every statement is idempotent, so it is safe to run again
-- and while the daemon and the application run (migration briefly locks
-- oauth_accounts against writes; reads go on). Nothing in it reads or writes
-- every row of a large table while that lock is held: work of that size
-- (backfills, index builds) is done here only for a small table (a fresh
-- install) and otherwise by `oauth-refreshctl migrate` after the commit.

SELECT pg_advisory_xact_lock(hashtext('oauth_refreshd.migrate')) AS migrate_lock;

-- Names in this file are resolved in pg_catalog only (for this transaction):
-- the SQL-standard function bodies below are bound now, once, to the objects
-- meant, whatever objects other roles create in public later.
SELECT set_config('search_path', 'pg_catalog, pg_temp', true) AS pinned_search_path;

-- Take the application's table first, in the mode CREATE TRIGGER needs, so
-- the lock order is the same as an application write's (oauth_accounts, then
-- account_state through the trigger): no deadlock, and reads go on.
LOCK TABLE public.oauth_accounts IN SHARE ROW EXCLUSIVE MODE;

-- Whether this is the first installation (no trigger yet): only then can
-- accounts exist that have no state row (see the end of this file).
SELECT set_config('oauth_refreshd.first_install',
                  CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                                     WHERE tgname = 'oauth_refreshd_account_change'
                                       AND tgrelid = 'public.oauth_accounts'::regclass)
                       THEN 'off' ELSE 'on' END, true) AS first_install;

CREATE SCHEMA IF NOT EXISTS oauth_refreshd;

CREATE TABLE IF NOT EXISTS oauth_refreshd.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL,
    migrated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per account. due_at is the "expiry-equivalent" time: an account
-- may be claimed once due_at - lead_time - (its jitter) has passed. It mirrors
-- oauth_accounts.expires_at for refreshable accounts, is pushed to
-- retry_at + lead_time after a failed attempt, and is NULL for accounts that
-- are not refreshable or are revoked, so the partial index below holds only
-- the accounts the daemon may ever have to look at.
CREATE TABLE IF NOT EXISTS oauth_refreshd.account_state (
    account_id        bigint PRIMARY KEY
                      REFERENCES public.oauth_accounts (id) ON DELETE CASCADE,
    due_at            timestamptz,
    retry_at          timestamptz,
    lease_owner       text,
    lease_until       timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    last_error_at     timestamptz,
    revoked           boolean NOT NULL DEFAULT false,
    revoked_at        timestamptz,
    last_refreshed_at timestamptz,
    refresh_count     bigint NOT NULL DEFAULT 0
);

-- Every refresh updates a row twice (claim, then write-back). Room on each
-- page lets the claim, which changes no indexed column, be a HOT update (no
-- index entries). Applies to pages written from now on; existing tables
-- converge as rows are updated. Benchmark: -6 to -8 % PostgreSQL CPU per refresh.
ALTER TABLE oauth_refreshd.account_state SET (fillfactor = 70);

CREATE INDEX IF NOT EXISTS account_state_due_idx
    ON oauth_refreshd.account_state (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS account_state_failing_idx
    ON oauth_refreshd.account_state (last_error_at) WHERE last_error IS NOT NULL;
CREATE INDEX IF NOT EXISTS account_state_revoked_idx
    ON oauth_refreshd.account_state (revoked_at) WHERE revoked;

-- A revocation is lifted only by a different refresh token, compared as
-- plaintext (SPEC §6): a save() that re-encrypts the same token is no new
-- token. store_revoked() keeps a keyed fingerprint of the refused token
-- (hex BLAKE2b-256 keyed with the primary Fernet key, personalisation
-- "oauthrd-revtok-1"; never the token), and when the application writes the
-- refresh token of such a row the trigger keeps the revocation and marks the
-- row revoked_token_changed; the daemon decrypts the new token, compares
-- fingerprints, and lifts the revocation or keeps it
-- (revoked_token_changes(), settle_revoked_token_changes()). Revocations
-- without a fingerprint (recorded before schema version 2) are lifted by the
-- trigger on any change of the ciphertext, as before.
ALTER TABLE oauth_refreshd.account_state ADD COLUMN IF NOT EXISTS revoked_token_tag text;
ALTER TABLE oauth_refreshd.account_state
    ADD COLUMN IF NOT EXISTS revoked_token_changed boolean NOT NULL DEFAULT false;
-- (account_state_revoked_changed_idx, on (account_id) WHERE
-- revoked_token_changed, is built with the version 3 indexes below.)

-- The provider's words about last_error (its error_description, redacted as
-- the journal's are: no token text; at most 256 characters), for
-- `oauth-refreshctl show`. Written and cleared with last_error.
ALTER TABLE oauth_refreshd.account_state ADD COLUMN IF NOT EXISTS last_error_detail text;

-- Version 3: the account's provider (oauth_accounts.provider as text), written
-- by the trigger on every insert and on every change of the provider, so a
-- claim finds a provider's due rows in account_state_claim_idx without
-- visiting oauth_accounts. NULL only on rows from before version 3 that
-- `oauth-refreshctl migrate` has not yet backfilled.
ALTER TABLE oauth_refreshd.account_state ADD COLUMN IF NOT EXISTS provider text;

-- Which text of this file the last complete `oauth-refreshctl migrate` applied
-- (md5), so that a run against an up-to-date database changes nothing.
ALTER TABLE oauth_refreshd.meta ADD COLUMN IF NOT EXISTS sql_md5 text;

-- The claim path (version 3). account_state_claim_idx holds each provider's
-- refreshable rows in due order: claim_due and next_wakeup walk one provider's
-- part of it and stop at their LIMIT. account_state_unfilled_idx holds the due
-- rows not yet backfilled (provider IS NULL): empty once migrate has finished,
-- it lets claims take those rows in due order during the migration.
-- Neither holds lease_owner or lease_until, so a claim (which writes only
-- those) stays a HOT update.
--
-- `oauth-refreshctl migrate` (which sets oauth_refreshd.migrate_online) does
-- the backfill and builds the indexes concurrently after this commit. When
-- this file is applied by hand, it does them here, in this transaction, on a
-- small table (a fresh install); on a larger one they would hold the
-- application's writes for as long as they take, so they are left to migrate.
-- An index left invalid by an interrupted concurrent build is
-- dropped by migrate before this file runs.
DO $v3$
BEGIN
    IF current_setting('oauth_refreshd.migrate_online', true) IS DISTINCT FROM 'on'
       AND (SELECT count(*) FROM (SELECT 1 FROM oauth_refreshd.account_state LIMIT 20001) x)
           <= 20000 THEN
        UPDATE oauth_refreshd.account_state s
           SET provider = a.provider::text
          FROM public.oauth_accounts a
         WHERE a.id = s.account_id AND s.provider IS NULL;
        CREATE INDEX IF NOT EXISTS account_state_claim_idx
            ON oauth_refreshd.account_state (provider, due_at) WHERE due_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS account_state_unfilled_idx
            ON oauth_refreshd.account_state (due_at)
            WHERE provider IS NULL AND due_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS account_state_revoked_changed_idx
            ON oauth_refreshd.account_state (account_id) WHERE revoked_token_changed;
    END IF;
END
$v3$;

-- A stable per-account fraction in [0, 1) that spreads refreshes over the
-- jitter window without any randomness the database would have to remember.
--
-- The small SQL helpers below have SQL-standard bodies (BEGIN ATOMIC): bound
-- when created, so no search_path can redirect them, and still inlined into
-- the queries that call them (a SET search_path clause would stop inlining and
-- cost about 3 us per call, once per claimed or written row).
CREATE OR REPLACE FUNCTION oauth_refreshd.jitter_fraction(p_id bigint)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (((p_id & 2147483647) * 2654435761) % 4294967296)::double precision / 4294967296.0;
END;

-- STABLE, as to_char() is: a SQL function declared more strictly than its
-- body is never inlined, and a call that is not inlined costs an executor
-- start per row.
CREATE OR REPLACE FUNCTION oauth_refreshd.utc_text(p_ts timestamptz)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT to_char(p_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
END;

-- A JSON string literal for p (JSON null for NULL), escaped by PostgreSQL's
-- own JSON code: quotes, backslashes and control characters are escaped,
-- other characters (UTF-8) pass as they are. The event payloads of SPEC §5 are
-- compact JSON built from these pieces, byte for byte:
-- {"event":"refreshed","account_id":42,"provider":"google","expires_at":"..."}
-- (json_build_object()::text would put " : " and ", " between the members).
CREATE OR REPLACE FUNCTION oauth_refreshd.json_text(p text)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT COALESCE(to_json(p)::text, 'null');
END;

CREATE OR REPLACE FUNCTION oauth_refreshd.event_refreshed(
    p_id bigint, p_provider text, p_expires_at timestamptz)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT '{"event":"refreshed","account_id":' || COALESCE(p_id::text, 'null')
           || ',"provider":' || oauth_refreshd.json_text(p_provider)
           || ',"expires_at":' || oauth_refreshd.json_text(oauth_refreshd.utc_text(p_expires_at))
           || '}';
END;

CREATE OR REPLACE FUNCTION oauth_refreshd.event_revoked(
    p_id bigint, p_provider text, p_error text)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT '{"event":"revoked","account_id":' || COALESCE(p_id::text, 'null')
           || ',"provider":' || oauth_refreshd.json_text(p_provider)
           || ',"error":' || oauth_refreshd.json_text(p_error)
           || '}';
END;

CREATE OR REPLACE FUNCTION oauth_refreshd.event_failed(
    p_id bigint, p_provider text, p_error text, p_retry_at timestamptz)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT '{"event":"failed","account_id":' || COALESCE(p_id::text, 'null')
           || ',"provider":' || oauth_refreshd.json_text(p_provider)
           || ',"error":' || oauth_refreshd.json_text(p_error)
           || ',"retry_at":' || oauth_refreshd.json_text(oauth_refreshd.utc_text(p_retry_at))
           || '}';
END;

-- Keeps account_state in step with the application's writes and wakes the
-- daemon. A new refresh token stored by the application clears the failure
-- history, and a revocation recorded without a fingerprint; a revocation with
-- one is kept and the row marked revoked_token_changed, for the daemon to
-- compare the tokens as plaintext (the same token re-saved stays revoked).
-- The daemon's own write-backs set the transaction setting
-- oauth_refreshd.writer = 'daemon', so they do not notify.
CREATE OR REPLACE FUNCTION oauth_refreshd.on_account_change()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_refreshable   boolean := NEW.refresh_token IS NOT NULL AND NEW.expires_at IS NOT NULL;
    v_token_changed boolean := TG_OP = 'INSERT'
                               OR NEW.refresh_token IS DISTINCT FROM OLD.refresh_token;
BEGIN
    INSERT INTO oauth_refreshd.account_state AS s (account_id, due_at, provider)
    VALUES (NEW.id, CASE WHEN v_refreshable THEN NEW.expires_at END, NEW.provider::text)
    -- (Every expression below sees the row as it was: "held" is
    -- s.revoked AND s.revoked_token_tag IS NOT NULL, a revocation the daemon
    -- must confirm or lift by comparing plaintexts.)
    ON CONFLICT (account_id) DO UPDATE SET
        provider   = NEW.provider::text,
        revoked    = s.revoked AND (NOT v_token_changed OR s.revoked_token_tag IS NOT NULL),
        revoked_token_changed = s.revoked_token_changed
                                OR (v_token_changed AND s.revoked
                                    AND s.revoked_token_tag IS NOT NULL),
        revoked_at = CASE WHEN v_token_changed
                               AND NOT (s.revoked AND s.revoked_token_tag IS NOT NULL)
                          THEN NULL ELSE s.revoked_at END,
        attempts   = CASE WHEN v_token_changed
                               AND NOT (s.revoked AND s.revoked_token_tag IS NOT NULL)
                          THEN 0 ELSE s.attempts END,
        retry_at   = CASE WHEN v_token_changed
                               AND NOT (s.revoked AND s.revoked_token_tag IS NOT NULL)
                          THEN NULL ELSE s.retry_at END,
        last_error = CASE WHEN v_token_changed
                               AND NOT (s.revoked AND s.revoked_token_tag IS NOT NULL)
                          THEN NULL ELSE s.last_error END,
        last_error_detail = CASE WHEN v_token_changed
                                      AND NOT (s.revoked AND s.revoked_token_tag IS NOT NULL)
                                 THEN NULL ELSE s.last_error_detail END,
        due_at     = CASE WHEN NOT v_refreshable THEN NULL
                          WHEN NOT s.revoked THEN NEW.expires_at
                          WHEN v_token_changed AND s.revoked_token_tag IS NULL THEN NEW.expires_at
                          ELSE NULL END;
    IF v_refreshable
       AND current_setting('oauth_refreshd.writer', true) IS DISTINCT FROM 'daemon' THEN
        PERFORM pg_notify('oauth_refreshd_account_changed',
                          NEW.id::text || ' ' || extract(epoch FROM NEW.expires_at)::text);
    END IF;
    RETURN NULL;
END
$$;

-- store_refreshed() writes the account_state rows of its own write-backs in
-- the same statement and sets oauth_refreshd.caller_keeps_state = 'on' around
-- it: for those rows the trigger would only write a row version that is
-- overwritten at once (a non-HOT update, its due_at being indexed) and queue
-- an event per row. The WHEN clause is evaluated as each row is updated, so
-- no event is even queued. Every other writer (the application, rotate_batch)
-- leaves the setting unset and keeps the trigger.
CREATE OR REPLACE TRIGGER oauth_refreshd_account_change
    AFTER INSERT OR UPDATE OF expires_at, refresh_token, provider ON public.oauth_accounts
    FOR EACH ROW
    WHEN (current_setting('oauth_refreshd.caller_keeps_state', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION oauth_refreshd.on_account_change();

-- Accounts that existed before the trigger (first migration).
-- Only at the first installation: the trigger has seen every write since, and
-- this anti-join reads both tables whole while oauth_accounts is locked.
INSERT INTO oauth_refreshd.account_state (account_id, due_at, provider)
SELECT a.id, CASE WHEN a.refresh_token IS NOT NULL AND a.expires_at IS NOT NULL
                  THEN a.expires_at END, a.provider::text
  FROM public.oauth_accounts a
 WHERE current_setting('oauth_refreshd.first_install') = 'on'
   AND NOT EXISTS (SELECT 1 FROM oauth_refreshd.account_state s WHERE s.account_id = a.id)
ON CONFLICT (account_id) DO NOTHING;

-- Signatures of pre-release builds: drop them so each function has one form.
DROP FUNCTION IF EXISTS oauth_refreshd.claim_due(text, text[], interval, interval, interval, integer);
DROP FUNCTION IF EXISTS oauth_refreshd.store_refreshed(text, bigint[], text[], text[], text[], text[],
                                                       timestamptz[], text[], text[]);
-- Version 1's store_refreshed (no p_error, p_retry_at): a call with ten
-- arguments would otherwise be ambiguous between the two.
DROP FUNCTION IF EXISTS oauth_refreshd.store_refreshed(text, bigint[], text[], text[], text[], text[],
                                                       timestamptz[], text[], text[], interval);
DROP FUNCTION IF EXISTS oauth_refreshd.store_revoked(text, bigint[], text[], text[]);
-- Before last_error_detail: the signatures without p_details.
DROP FUNCTION IF EXISTS oauth_refreshd.store_refreshed(text, bigint[], text[], text[], text[], text[],
                                                       timestamptz[], text[], text[], interval,
                                                       text[], timestamptz[]);
DROP FUNCTION IF EXISTS oauth_refreshd.store_failed(text, bigint[], text[], timestamptz[], interval);
DROP FUNCTION IF EXISTS oauth_refreshd.store_revoked(text, bigint[], text[], text[], text[]);

-- Claims up to p_limit due accounts of the given providers for p_owner: the
-- lease is written by the same statement that selects the rows, and rows
-- another instance is claiming at this moment are skipped, so no two
-- instances ever hold one account. The most urgent (earliest due) go first.
CREATE OR REPLACE FUNCTION oauth_refreshd.claim_due(
    p_owner text, p_providers text[], p_lead interval, p_jitter interval,
    p_lease interval, p_limit integer, p_since timestamptz DEFAULT NULL)
RETURNS TABLE (account_id bigint, provider text, refresh_token text, scope text,
               expires_at timestamptz, attempts integer)
LANGUAGE sql
-- Walk each provider's part of account_state_claim_idx in due order and stop
-- after p_limit rows: a claim reads its own provider's due rows only, however
-- large the other providers' backlog (version 3). One LATERAL subquery per
-- provider in p_providers (the daemon names one): `provider = ANY (array)` on
-- the index's leading column would lose the due order and sort the whole
-- range. Rows not backfilled yet (provider IS NULL, during an online
-- migration) come from account_state_unfilled_idx, empty afterwards, and take
-- their provider from oauth_accounts. Rows locked by another claim are
-- skipped inside each walk, so they do not count against p_limit. The due
-- bound is a row comparison, (provider, due_at) <= (name, ...), which only
-- account_state_claim_idx can serve: written as due_at <= ..., a stale
-- estimate of how much is due made the planner walk account_state_due_idx and
-- filter on the provider, i.e. through every other provider's backlog.
--
-- The planner's row estimate for "due_at <= now() + lead" comes from the last
-- ANALYZE and lags behind (refreshed rows move an hour ahead): it then picks a
-- bitmap scan of the whole range plus a sort, which also visits every dead
-- tuple left by recent refreshes. Benchmark (2,800/s continuous): 52 ms per
-- claim with the bitmap plan.
--
-- jit = off: the planner's total cost of this statement (the walk counted for
-- ten providers, unnest()'s default estimate for a parameter) passes
-- jit_above_cost (100,000) once account_state holds about a million rows, and
-- every claim then JIT-compiled ~49 functions before a run of a few ms.
-- Benchmark (1M backlog): 46-72 ms per claim with JIT, ~11 ms without, the
-- same ~2,400 buffers either way. The daemon's statements are short batches
-- that run once per plan, so compiling them never pays: every function of its
-- hot path below says jit = off (in the function, so that a daemon of an older
-- release, running with these bodies, gets it too).
SET enable_bitmapscan = off
SET enable_seqscan = off
SET jit = off
AS $$
    WITH cand AS (
        SELECT c.*
          FROM unnest(p_providers) AS p(name)
         CROSS JOIN LATERAL (
            SELECT s.account_id, s.due_at, a.provider::text AS provider, a.refresh_token,
                   a.scope, a.expires_at
              FROM oauth_refreshd.account_state s
              JOIN public.oauth_accounts a ON a.id = s.account_id
             WHERE s.provider = p.name
               AND s.due_at IS NOT NULL
               AND (s.provider, s.due_at) <= (p.name, now() + p_lead + p_jitter)
               AND s.due_at - p_lead
                   - p_jitter * oauth_refreshd.jitter_fraction(s.account_id) <= now()
               AND (s.lease_until IS NULL OR s.lease_until < now())
               AND (s.retry_at IS NULL OR s.retry_at <= now())
               AND a.refresh_token IS NOT NULL
               -- --once: one attempt per account and run
               AND (p_since IS NULL
                    OR (COALESCE(s.last_refreshed_at, '-infinity') < p_since
                        AND COALESCE(s.last_error_at, '-infinity') < p_since))
             ORDER BY s.due_at
             LIMIT p_limit
               FOR UPDATE OF s SKIP LOCKED) c
        UNION ALL
        SELECT u.*
          FROM (SELECT s.account_id, s.due_at, a.provider::text AS provider, a.refresh_token,
                       a.scope, a.expires_at
                  FROM oauth_refreshd.account_state s
                  JOIN public.oauth_accounts a ON a.id = s.account_id
                 WHERE s.provider IS NULL
                   AND s.due_at IS NOT NULL
                   AND s.due_at <= now() + p_lead + p_jitter
                   AND s.due_at - p_lead
                       - p_jitter * oauth_refreshd.jitter_fraction(s.account_id) <= now()
                   AND (s.lease_until IS NULL OR s.lease_until < now())
                   AND (s.retry_at IS NULL OR s.retry_at <= now())
                   AND a.provider = ANY (p_providers)
                   AND a.refresh_token IS NOT NULL
                   AND (p_since IS NULL
                        OR (COALESCE(s.last_refreshed_at, '-infinity') < p_since
                            AND COALESCE(s.last_error_at, '-infinity') < p_since))
                 ORDER BY s.due_at
                 LIMIT p_limit
                   FOR UPDATE OF s SKIP LOCKED) u
    ), picked AS (
        -- The most urgent p_limit of them; the others were locked only for the
        -- rest of this statement and stay unclaimed.
        SELECT * FROM cand ORDER BY due_at LIMIT p_limit
    )
    -- The account's columns come from the row picked read (the same snapshot),
    -- not from a second lookup of oauth_accounts per claimed row.
    UPDATE oauth_refreshd.account_state s
       SET lease_owner = p_owner, lease_until = now() + p_lease
      FROM picked
     WHERE s.account_id = picked.account_id
    RETURNING s.account_id, picked.provider, picked.refresh_token, picked.scope,
              picked.expires_at, s.attempts
$$;

-- Claims the named accounts whether due or not (oauth_refresh_request), as
-- long as they are refreshable, not revoked (the daemon stops trying a revoked
-- account until the application stores a different refresh token) and nobody
-- holds them.
CREATE OR REPLACE FUNCTION oauth_refreshd.claim_ids(
    p_owner text, p_providers text[], p_ids bigint[], p_lease interval)
RETURNS TABLE (account_id bigint, provider text, refresh_token text, scope text,
               expires_at timestamptz, attempts integer)
LANGUAGE sql
SET jit = off  -- as claim_due
AS $$
    WITH picked AS (
        SELECT s.account_id
          FROM oauth_refreshd.account_state s
          JOIN public.oauth_accounts a ON a.id = s.account_id
         WHERE s.account_id = ANY (p_ids)
           AND NOT s.revoked
           AND (s.lease_until IS NULL OR s.lease_until < now())
           AND a.provider = ANY (p_providers)
           AND a.refresh_token IS NOT NULL AND a.expires_at IS NOT NULL
           FOR UPDATE OF s SKIP LOCKED
    )
    UPDATE oauth_refreshd.account_state s
       SET lease_owner = p_owner, lease_until = now() + p_lease
      FROM picked, public.oauth_accounts a
     WHERE s.account_id = picked.account_id AND a.id = s.account_id
    RETURNING s.account_id, a.provider::text, a.refresh_token, a.scope, a.expires_at,
              s.attempts
$$;

-- When the daemon should look again: the earliest moment one of the next
-- unleased accounts becomes claimable (jitter included), or the moment a lease
-- on a due account runs out (takeover of a crashed instance's claims).
--
-- Both parts walk each provider's part of account_state_claim_idx (and the
-- not yet backfilled rows of account_state_unfilled_idx) in due order and
-- stop at their LIMIT, as claim_due does: a provider's wake-up time never
-- costs a walk through another provider's backlog.
--
-- The lease part looks at the first 2,000 due accounts of each provider in due
-- order, not at the whole due range: with a backlog that range is every
-- overdue account, and min(lease_until) over it was a bitmap scan of all of
-- them on every call. Claims are taken in due order, so the leases that run
-- out first sit at the front; one further back is seen once the front is
-- claimed, and the daemon never sleeps longer than scan_interval anyway.
-- lease_until gets no index of its own: an index on it would make every claim
-- a non-HOT update.
CREATE OR REPLACE FUNCTION oauth_refreshd.next_wakeup(
    p_providers text[], p_lead interval, p_jitter interval)
RETURNS timestamptz LANGUAGE sql STABLE
-- As in claim_due: walk the indexes in order and stop at the LIMIT, even when
-- the last ANALYZE says few accounts are due, and look each not yet backfilled
-- account up by its key on the way.
SET enable_bitmapscan = off
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off  -- as claim_due
AS $$
    SELECT LEAST(
        (SELECT min(GREATEST(n.due_at - p_lead
                             - p_jitter * oauth_refreshd.jitter_fraction(n.account_id),
                             n.retry_at))
           FROM (SELECT f.*
                   FROM unnest(p_providers) AS p(name)
                  CROSS JOIN LATERAL (
                     SELECT s.account_id, s.due_at, s.retry_at
                       FROM oauth_refreshd.account_state s
                      WHERE s.provider = p.name
                        AND s.due_at IS NOT NULL
                        AND (s.lease_until IS NULL OR s.lease_until < now())
                      ORDER BY s.due_at
                      LIMIT 1000) f
                 UNION ALL
                 SELECT g.*
                   FROM (SELECT s.account_id, s.due_at, s.retry_at
                           FROM oauth_refreshd.account_state s
                           JOIN public.oauth_accounts a ON a.id = s.account_id
                          WHERE s.provider IS NULL
                            AND s.due_at IS NOT NULL
                            AND (s.lease_until IS NULL OR s.lease_until < now())
                            AND a.provider = ANY (p_providers)
                          ORDER BY s.due_at
                          LIMIT 1000) g) n),
        (SELECT min(l.lease_until)
           FROM (SELECT f.lease_until
                   FROM unnest(p_providers) AS p(name)
                  CROSS JOIN LATERAL (
                     SELECT s.lease_until
                       FROM oauth_refreshd.account_state s
                      WHERE s.provider = p.name
                        AND s.due_at IS NOT NULL
                        AND (s.provider, s.due_at) <= (p.name, now() + p_lead + p_jitter)
                      ORDER BY s.due_at
                      LIMIT 2000) f
                 UNION ALL
                 SELECT g.lease_until
                   FROM (SELECT s.lease_until
                           FROM oauth_refreshd.account_state s
                          WHERE s.provider IS NULL
                            AND s.due_at IS NOT NULL AND s.due_at <= now() + p_lead + p_jitter
                          ORDER BY s.due_at
                          LIMIT 2000) g) l
          WHERE l.lease_until >= now()))
$$;

-- Writes successful refreshes. Each row is written only if oauth_accounts
-- still holds the refresh token ciphertext that was used (p_old_refresh);
-- the others are answered `false` and keep their claim: the daemon reads their
-- refresh token again (current_refresh_tokens), writes the result against the
-- new ciphertext when it holds the same token (the application re-saved it),
-- and gives the claim back (release) when it does not. NULL in p_refresh / p_id_token / p_scope / p_token_type
-- keeps the stored value. Emits one `refreshed` event per stored row. Returns
-- (account_id, stored) for every input id, in input order.
--
-- Partial results (p_error not NULL for that row): the provider rotated the
-- refresh token but the rest of its answer could not be used. The new refresh
-- token (and id token) is stored under the same compare-and-swap, the access
-- token and expires_at stay as they are (p_access and p_expires_at are NULL),
-- and the attempt is recorded as store_failed records it: attempts + 1,
-- last_error, retry_at = p_retry_at, claimable again from p_retry_at, and one
-- `failed` event. p_error and p_retry_at may be NULL as a whole (no partial
-- results).
--
-- Cost per account (500 per call): one update of oauth_accounts and one of
-- account_state, in one statement; the trigger is skipped for these rows
-- (caller_keeps_state: the state row is written here, with everything the
-- trigger would have set), and the writer setting keeps it from notifying
-- should it run. Sets are matched by joins on the tables' keys, never by
-- `= ANY (array)` filters, which cost rows x array length.
CREATE OR REPLACE FUNCTION oauth_refreshd.store_refreshed(
    p_owner text, p_ids bigint[], p_old_refresh text[], p_access text[],
    p_refresh text[], p_id_token text[], p_expires_at timestamptz[],
    p_scope text[], p_token_type text[], p_lead interval,
    p_error text[] DEFAULT NULL, p_retry_at timestamptz[] DEFAULT NULL,
    p_details text[] DEFAULT NULL)
RETURNS TABLE (account_id bigint, stored boolean)
LANGUAGE plpgsql
-- Plan each call with its arrays' real lengths: a cached generic plan assumes
-- 10 elements per array and may join two 500-element sets by nested loop.
SET plan_cache_mode = force_custom_plan
SET jit = off  -- as claim_due
AS $$
DECLARE
    v_ids   bigint[];
    v_prov  text[];
    v_exp   timestamptz[];
    v_err   text[];
    v_retry timestamptz[];
BEGIN
    PERFORM set_config('oauth_refreshd.writer', 'daemon', true);
    PERFORM set_config('oauth_refreshd.caller_keeps_state', 'on', true);

    -- unnest() pads a shorter (or NULL) array with NULLs: no partial results.
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_old_refresh, p_access, p_refresh, p_id_token,
                             p_expires_at, p_scope, p_token_type, p_error, p_retry_at,
                             p_details)
                   AS u(id, old_rt, access, rt, idt, exp, scope, ttype, err, retry, detail)
         WHERE u.id IS NOT NULL
    ), upd AS (
        UPDATE public.oauth_accounts a
           SET access_token  = COALESCE(i.access, a.access_token),
               refresh_token = COALESCE(i.rt, a.refresh_token),
               id_token      = COALESCE(i.idt, a.id_token),
               expires_at    = COALESCE(i.exp, a.expires_at),
               scope         = COALESCE(i.scope, a.scope),
               token_type    = COALESCE(i.ttype, a.token_type),
               updated_at    = now()
          FROM input i
         WHERE a.id = i.id AND a.refresh_token = i.old_rt
        RETURNING a.id, a.provider::text AS provider, a.expires_at, i.err, i.retry, i.detail
    ), state AS (
        -- Everything the trigger sets for a new token (revocation history
        -- cleared, due_at from expires_at), plus the release. A partial result
        -- is a failed attempt: its backoff, and due again at its retry time.
        UPDATE oauth_refreshd.account_state s
           SET lease_owner = NULL, lease_until = NULL, revoked = false, revoked_at = NULL,
               attempts = CASE WHEN u.err IS NULL THEN 0 ELSE s.attempts + 1 END,
               retry_at = u.retry,
               last_error = u.err,
               last_error_detail = CASE WHEN u.err IS NULL THEN NULL
                                        ELSE left(NULLIF(u.detail, ''), 256) END,
               last_error_at = CASE WHEN u.err IS NULL THEN NULL ELSE now() END,
               last_refreshed_at = CASE WHEN u.err IS NULL THEN now()
                                        ELSE s.last_refreshed_at END,
               refresh_count = s.refresh_count + CASE WHEN u.err IS NULL THEN 1 ELSE 0 END,
               -- A token that lives shorter than the lead time would be due again
               -- at once: refresh it at half its life instead of in a tight loop.
               due_at = CASE WHEN u.err IS NULL
                             THEN GREATEST(u.expires_at,
                                           now() + (u.expires_at - now()) / 2 + p_lead)
                             ELSE u.retry + p_lead END
          FROM upd u
         WHERE s.account_id = u.id
    )
    SELECT COALESCE(array_agg(upd.id), '{}'), COALESCE(array_agg(upd.provider), '{}'),
           COALESCE(array_agg(upd.expires_at), '{}'), COALESCE(array_agg(upd.err), '{}'),
           COALESCE(array_agg(upd.retry), '{}')
      INTO v_ids, v_prov, v_exp, v_err, v_retry
      FROM upd;

    PERFORM set_config('oauth_refreshd.caller_keeps_state', 'off', true);

    PERFORM pg_notify('oauth_refresh_event', oauth_refreshd.event_refreshed(u.id, u.prov, u.exp))
       FROM unnest(v_ids, v_prov, v_exp, v_err) AS u(id, prov, exp, err)
      WHERE u.err IS NULL;
    -- Partial results: the attempt failed (one `failed` event per failed attempt).
    IF p_error IS NOT NULL THEN
        PERFORM pg_notify('oauth_refresh_event',
                          oauth_refreshd.event_failed(u.id, u.prov, u.err, u.retry))
           FROM unnest(v_ids, v_prov, v_err, v_retry) AS u(id, prov, err, retry)
          WHERE u.err IS NOT NULL;
    END IF;

    -- v_ids holds distinct ids of p_ids: as many means every input id was
    -- written (the usual case), and nothing is left to release.
    IF cardinality(v_ids) = cardinality(p_ids) THEN
        RETURN QUERY SELECT i.id, true FROM unnest(p_ids) AS i(id);
        RETURN;
    END IF;

    -- Rows not written keep their claim until the daemon has compared the
    -- tokens as plaintext: another instance must not claim a row that may
    -- hold a re-saved copy of the token the provider has just consumed.
    RETURN QUERY
        SELECT i.id, w.id IS NOT NULL
          FROM unnest(p_ids) WITH ORDINALITY AS i(id, n)
          LEFT JOIN unnest(v_ids) AS w(id) ON w.id = i.id
         ORDER BY i.n;
END
$$;

-- Records failed attempts: the error, the time of the next attempt (the
-- account becomes claimable again at p_retry_at), and releases the claim. A
-- row whose claim was meanwhile taken by another instance is left alone (its
-- state belongs to that instance now), but the `failed` event is still sent:
-- one per failed attempt.
CREATE OR REPLACE FUNCTION oauth_refreshd.store_failed(
    p_owner text, p_ids bigint[], p_errors text[], p_retry_at timestamptz[],
    p_lead interval, p_details text[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SET jit = off  -- as claim_due
AS $$
BEGIN
    UPDATE oauth_refreshd.account_state s
       SET attempts = s.attempts + 1, last_error = u.err, last_error_at = now(),
           last_error_detail = left(NULLIF(u.detail, ''), 256),
           retry_at = u.retry,
           due_at = CASE WHEN s.due_at IS NULL THEN NULL
                         ELSE GREATEST(s.due_at, u.retry + p_lead) END,
           lease_owner = NULL, lease_until = NULL
      FROM unnest(p_ids, p_errors, p_retry_at, p_details) AS u(id, err, retry, detail)
     WHERE s.account_id = u.id AND s.lease_owner = p_owner;

    PERFORM pg_notify('oauth_refresh_event',
                      oauth_refreshd.event_failed(u.id, a.provider::text, u.err, u.retry))
       FROM unnest(p_ids, p_errors, p_retry_at) AS u(id, err, retry)
       JOIN public.oauth_accounts a ON a.id = u.id;
END
$$;

-- Marks accounts revoked, but only those that still hold the refresh token
-- ciphertext that was refused. The others keep their claim: the daemon reads
-- their refresh token again (current_refresh_tokens) and marks them against
-- the new ciphertext when it holds the same token (a re-save is no new token);
-- otherwise the refusal was a lost race with another writer, not a revocation,
-- and the daemon gives the claim back (release). p_tags holds the keyed
-- fingerprint of each refused token (see revoked_token_tag above; NULL when
-- the daemon could not make one, or no array). Returns whether each account
-- was marked, in input order.
CREATE OR REPLACE FUNCTION oauth_refreshd.store_revoked(
    p_owner text, p_ids bigint[], p_old_refresh text[], p_errors text[],
    p_tags text[] DEFAULT NULL, p_details text[] DEFAULT NULL)
RETURNS TABLE (account_id bigint, revoked boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
SET jit = off  -- as claim_due
AS $$
DECLARE
    v_ids  bigint[];
    v_prov text[];
    v_err  text[];
BEGIN
    -- Lock the rows so the application cannot store a new token between the
    -- comparison and the mark.
    PERFORM 1 FROM public.oauth_accounts a WHERE a.id = ANY (p_ids) FOR SHARE;

    WITH marked AS (
        SELECT u.id, a.provider::text AS provider, u.err, u.tag, u.detail
          FROM unnest(p_ids, p_old_refresh, p_errors, p_tags, p_details)
               AS u(id, old_rt, err, tag, detail)
          JOIN public.oauth_accounts a ON a.id = u.id AND a.refresh_token = u.old_rt
    ), state AS (
        UPDATE oauth_refreshd.account_state s
           SET revoked = true, revoked_at = now(), due_at = NULL, retry_at = NULL,
               revoked_token_tag = m.tag, revoked_token_changed = false,
               attempts = s.attempts + 1, last_error = m.err, last_error_at = now(),
               last_error_detail = left(NULLIF(m.detail, ''), 256),
               lease_owner = NULL, lease_until = NULL
          FROM marked m
         WHERE s.account_id = m.id
    )
    SELECT COALESCE(array_agg(m.id), '{}'), COALESCE(array_agg(m.provider), '{}'),
           COALESCE(array_agg(m.err), '{}')
      INTO v_ids, v_prov, v_err
      FROM marked m;

    PERFORM pg_notify('oauth_refresh_event', oauth_refreshd.event_revoked(u.id, u.prov, u.err))
       FROM unnest(v_ids, v_prov, v_err) AS u(id, prov, err);

    RETURN QUERY
        SELECT i.id, w.id IS NOT NULL
          FROM unnest(p_ids) WITH ORDINALITY AS i(id, n)
          LEFT JOIN (SELECT DISTINCT x.id FROM unnest(v_ids) AS x(id)) AS w ON w.id = i.id
         ORDER BY i.n;
END
$$;

-- The refresh token ciphertext each account holds now (NULL for an account
-- that is gone), in input order. Read after a compare-and-swap of
-- store_refreshed or store_revoked failed: the daemon decrypts it and compares
-- the plaintext with the token it used, because Fernet ciphertexts are
-- randomised and an application that re-saved the row with the same refresh
-- token (Django re-encrypts every field on save()) has not changed it (SPEC §6).
CREATE OR REPLACE FUNCTION oauth_refreshd.current_refresh_tokens(p_ids bigint[])
RETURNS TABLE (account_id bigint, refresh_token text)
LANGUAGE sql STABLE AS $$
    SELECT i.id, a.refresh_token
      FROM unnest(p_ids) WITH ORDINALITY AS i(id, n)
      LEFT JOIN public.oauth_accounts a ON a.id = i.id
     ORDER BY i.n
$$;

-- Revoked accounts whose refresh token the application wrote since the
-- revocation: the token now stored and the fingerprint of the refused one.
CREATE OR REPLACE FUNCTION oauth_refreshd.revoked_token_changes(p_limit integer)
RETURNS TABLE (account_id bigint, refresh_token text, revoked_token_tag text)
LANGUAGE sql STABLE AS $$
    SELECT s.account_id, a.refresh_token, s.revoked_token_tag
      FROM oauth_refreshd.account_state s
      JOIN public.oauth_accounts a ON a.id = s.account_id
     WHERE s.revoked_token_changed
     ORDER BY s.account_id
     LIMIT p_limit
$$;

-- The daemon's verdict on those rows, each for the ciphertext it compared
-- (p_refresh): p_lift true (a different token) lifts the revocation and
-- clears the failure history, as the trigger does for an unrevoked account;
-- false (the same token, re-saved) keeps it, with no event. A row whose
-- token changed again since it was read is left marked for the next look.
CREATE OR REPLACE FUNCTION oauth_refreshd.settle_revoked_token_changes(
    p_ids bigint[], p_refresh text[], p_lift boolean[])
RETURNS void LANGUAGE sql AS $$
    UPDATE oauth_refreshd.account_state s
       SET revoked_token_changed = false,
           revoked = s.revoked AND NOT u.lift,
           revoked_at = CASE WHEN u.lift THEN NULL ELSE s.revoked_at END,
           revoked_token_tag = CASE WHEN u.lift THEN NULL ELSE s.revoked_token_tag END,
           attempts = CASE WHEN u.lift THEN 0 ELSE s.attempts END,
           retry_at = CASE WHEN u.lift THEN NULL ELSE s.retry_at END,
           last_error = CASE WHEN u.lift THEN NULL ELSE s.last_error END,
           last_error_detail = CASE WHEN u.lift THEN NULL ELSE s.last_error_detail END,
           due_at = CASE WHEN u.lift AND a.refresh_token IS NOT NULL THEN a.expires_at
                         ELSE s.due_at END
      FROM unnest(p_ids, p_refresh, p_lift) AS u(id, rt, lift), public.oauth_accounts a
     WHERE s.account_id = u.id AND a.id = u.id AND s.revoked_token_changed
       AND a.refresh_token IS NOT DISTINCT FROM u.rt
$$;

-- Gives claims back without recording anything (shutdown, work not started,
-- a result discarded because the application stored a different token).
CREATE OR REPLACE FUNCTION oauth_refreshd.release(p_owner text, p_ids bigint[])
RETURNS void LANGUAGE sql
SET jit = off  -- as claim_due
AS $$
    UPDATE oauth_refreshd.account_state s
       SET lease_owner = NULL, lease_until = NULL
     WHERE s.account_id = ANY (p_ids) AND s.lease_owner = p_owner
$$;

INSERT INTO oauth_refreshd.meta (singleton, schema_version) VALUES (true, 3)
ON CONFLICT (singleton) DO UPDATE SET schema_version = GREATEST(oauth_refreshd.meta.schema_version, 3),
                                      migrated_at = now();

-- ---- Key rotation (oauth-refreshctl rotate-keys; appended by the operator-tools work) ----
--
-- rotate-keys re-encrypts every token column under the primary Fernet key, in
-- batches, online. Its progress is kept per primary key so an interrupted run
-- resumes where it stopped. A primary key is identified by key_check, a Fernet
-- token of a fixed text made with that key: only a holder of the key can
-- recognise it, and nothing derived from the key itself is stored. pending
-- holds the ids a batch could not write (in use by a refresh, locked, or
-- changed meanwhile), to be looked at again before the pass finishes.
CREATE TABLE IF NOT EXISTS oauth_refreshd.rotation_progress (
    key_check   text PRIMARY KEY,
    last_id     bigint NOT NULL DEFAULT 0,
    pending     bigint[] NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- Writes one batch of re-encrypted tokens with a compare-and-swap on all three
-- old ciphertexts, so a concurrent refresh or application write is never
-- overwritten. It never waits for a lock (SKIP LOCKED, and in the same order as
-- the application's writes: oauth_accounts, then account_state), and leaves
-- alone rows a daemon has claimed: the daemon's own write-back compares the
-- refresh token ciphertext it read. The trigger takes the new ciphertext of the
-- same refresh token for a new token and would clear a revocation and the
-- failure backoff; the rows' state is put back as it was. Each row written is
-- also leased to rotate-keys for 10 s: a claim whose snapshot predates this
-- commit would otherwise pass its re-check of the state row and return the old
-- refresh token ciphertext, and the daemon's write-back would then be
-- discarded after the provider had already rotated the token. The short lease
-- makes that claim skip the row; the daemon wakes when the lease runs out.
-- Returns the ids written. With p_key_check, advances that rotation's progress in the same
-- transaction: last_id, and the ids not written appended to pending.
CREATE OR REPLACE FUNCTION oauth_refreshd.rotate_batch(
    p_key_check text, p_last_id bigint, p_ids bigint[],
    p_old_access text[], p_old_refresh text[], p_old_id text[],
    p_new_access text[], p_new_refresh text[], p_new_id text[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    v_locked   bigint[];
    v_ids      bigint[];
    v_revoked  boolean[];
    v_rev_at   timestamptz[];
    v_attempts integer[];
    v_retry    timestamptz[];
    v_error    text[];
    v_detail   text[];
    v_due      timestamptz[];
    v_changed  boolean[];
    v_free     bigint[];
    v_done     bigint[];
BEGIN
    PERFORM set_config('oauth_refreshd.writer', 'daemon', true);

    SELECT COALESCE(array_agg(x.id), '{}') INTO v_locked
      FROM (SELECT a.id FROM public.oauth_accounts a
             WHERE a.id = ANY (p_ids) ORDER BY a.id
               FOR NO KEY UPDATE SKIP LOCKED) x;

    SELECT COALESCE(array_agg(x.account_id), '{}'), array_agg(x.revoked),
           array_agg(x.revoked_at), array_agg(x.attempts), array_agg(x.retry_at),
           array_agg(x.last_error), array_agg(x.due_at), array_agg(x.revoked_token_changed),
           array_agg(x.last_error_detail)
      INTO v_ids, v_revoked, v_rev_at, v_attempts, v_retry, v_error, v_due, v_changed, v_detail
      FROM (SELECT s.account_id, s.revoked, s.revoked_at, s.attempts, s.retry_at,
                   s.last_error, s.due_at, s.revoked_token_changed, s.last_error_detail
              FROM oauth_refreshd.account_state s
             WHERE s.account_id = ANY (v_locked)
               AND (s.lease_until IS NULL OR s.lease_until < now()
                    OR s.lease_owner = 'oauth-refreshctl rotate-keys')
             ORDER BY s.account_id
               FOR UPDATE SKIP LOCKED) x;

    -- Rows the trigger has not seen yet (no state row) are free too.
    v_free := v_ids || ARRAY(SELECT l FROM unnest(v_locked) AS l
                              WHERE NOT EXISTS (SELECT 1 FROM oauth_refreshd.account_state s
                                                 WHERE s.account_id = l));

    WITH upd AS (
        UPDATE public.oauth_accounts a
           SET access_token = u.na, refresh_token = u.nr, id_token = u.ni
          FROM unnest(p_ids, p_old_access, p_old_refresh, p_old_id,
                      p_new_access, p_new_refresh, p_new_id)
               AS u(id, oa, orf, oi, na, nr, ni)
         WHERE a.id = u.id AND u.id = ANY (v_free)
           AND a.access_token IS NOT DISTINCT FROM u.oa
           AND a.refresh_token IS NOT DISTINCT FROM u.orf
           AND a.id_token IS NOT DISTINCT FROM u.oi
        RETURNING a.id)
    SELECT COALESCE(array_agg(upd.id), '{}') INTO v_done FROM upd;

    UPDATE oauth_refreshd.account_state s
       SET revoked = o.revoked, revoked_at = o.revoked_at, attempts = o.attempts,
           retry_at = o.retry_at, last_error = o.last_error, due_at = o.due_at,
           revoked_token_changed = o.changed, last_error_detail = o.detail,
           lease_owner = 'oauth-refreshctl rotate-keys',
           lease_until = now() + interval '10 seconds'
      FROM unnest(v_ids, v_revoked, v_rev_at, v_attempts, v_retry, v_error, v_due, v_changed,
                  v_detail)
           AS o(id, revoked, revoked_at, attempts, retry_at, last_error, due_at, changed,
                detail)
     WHERE s.account_id = o.id AND o.id = ANY (v_done);

    IF p_key_check IS NOT NULL THEN
        UPDATE oauth_refreshd.rotation_progress r
           SET last_id = GREATEST(r.last_id, p_last_id),
               pending = r.pending || ARRAY(SELECT i FROM unnest(p_ids) AS i
                                             WHERE NOT (i = ANY (v_done))),
               updated_at = now()
         WHERE r.key_check = p_key_check;
    END IF;

    RETURN QUERY SELECT unnest(v_done);
END
$$;

-- ---- Code that other roles run ----
--
-- PostgreSQL's advice for functions that run on behalf of other roles: pin
-- their search_path (the trigger runs inside every write to oauth_accounts;
-- the daemon's functions run as its role), so that objects someone creates in
-- public cannot stand in for the ones meant. SQL-standard bodies are bound at
-- creation and need no pin (and must stay inlinable). The trigger function
-- runs as the schema's owner, so whoever writes oauth_accounts needs no
-- privilege on oauth_refreshd. Nothing here may be executed by PUBLIC; the
-- daemon's role gets EXECUTE from `oauth-refreshctl grants ROLE`.
DO $harden$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig, p.prosqlbody IS NULL AS needs_pin
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'oauth_refreshd'::regnamespace
    LOOP
        IF f.needs_pin THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f.sig);
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
    END LOOP;
END
$harden$;
ALTER FUNCTION oauth_refreshd.on_account_change() SECURITY DEFINER;
