#!/usr/bin/python3
"""The Python peer: a straightforward asyncio refresher doing the daemon's job.

Owns: one `--once` pass over the due accounts of an oauth-refreshd database, the
way a competent Python developer would write it with Debian's packages:
psycopg 3 (async) claims due accounts with the daemon's own
`oauth_refreshd.claim_due` (FOR UPDATE SKIP LOCKED, a lease), `cryptography`'s
MultiFernet decrypts the refresh token, aiohttp POSTs the provider's form to the
token endpoint (at most `in_flight` requests at once, kept-alive connections),
the JSON answer is parsed and the new tokens re-encrypted, and the results are
written back in batches with one `UPDATE ... FROM unnest(...)` per batch, a
compare-and-swap on the old refresh token, the lease released and one
`oauth_refresh_event` NOTIFY per account, as the daemon's store_refreshed does.
It exists so that bench/run can print the ratio daemon/peer; it is not a product.
It ends with the daemon's summary line ("exiting: N refreshed, F failed, R
revoked") so the benchmark's runner reads both the same way.
Must never: print a token, or run against anything but the benchmark's database
and endpoint (it is given both in its JSON config).
"""

import argparse
import asyncio
import datetime
import json
import os
import ssl
import sys
import time

import aiohttp
import psycopg
from cryptography.fernet import Fernet, MultiFernet
from psycopg.rows import dict_row

OWNER = f"peer-{os.getpid()}"

WRITE_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(old)s::text[], %(at)s::text[], %(rt)s::text[],
                         %(idt)s::text[], %(exp)s::timestamptz[], %(scope)s::text[],
                         %(tt)s::text[])
               AS u(id, old_rt, access, rt, idt, exp, scope, ttype)
), upd AS (
    UPDATE public.oauth_accounts a
       SET access_token = i.access, refresh_token = COALESCE(i.rt, a.refresh_token),
           id_token = COALESCE(i.idt, a.id_token), expires_at = i.exp,
           scope = COALESCE(i.scope, a.scope), token_type = COALESCE(i.ttype, a.token_type),
           updated_at = now()
      FROM input i
     WHERE a.id = i.id AND a.refresh_token = i.old_rt
    RETURNING a.id, a.provider::text AS provider, a.expires_at
), st AS (
    UPDATE oauth_refreshd.account_state s
       SET lease_owner = NULL, lease_until = NULL, attempts = 0, retry_at = NULL,
           last_error = NULL, last_refreshed_at = now(), refresh_count = s.refresh_count + 1,
           due_at = u.expires_at
      FROM upd u
     WHERE s.account_id = u.id
    RETURNING s.account_id
)
SELECT count(pg_notify('oauth_refresh_event',
                       json_build_object('event', 'refreshed', 'account_id', u.id,
                                         'provider', u.provider,
                                         'expires_at', u.expires_at)::text))
  FROM upd u
"""


def log(msg):
    ts = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    print(f"{ts} peer: {msg}", flush=True)


class Peer:
    def __init__(self, cfg):
        self.cfg = cfg
        with open(cfg["keys_file"]) as f:
            keys = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        self.fernet = MultiFernet([Fernet(k) for k in keys])
        self.in_flight = int(cfg.get("in_flight", 1000))
        self.batch = int(cfg.get("batch_size", 500))
        self.slots = asyncio.Semaphore(self.in_flight)
        self.pending = []  # results waiting for the writer
        self.wake_writer = asyncio.Event()
        self.active = 0
        self.refreshed = self.failed = self.conflicts = 0
        self.tasks = set()

    # ---- database ----------------------------------------------------------------------

    async def claim_call(self, conn):
        """The claim statement, built from claim_due's own argument names, so that the
        peer follows the daemon's function whether it takes a provider list or one
        provider."""
        cur = await conn.execute(
            "SELECT pg_get_function_arguments(p.oid) AS args FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'oauth_refreshd' "
            "AND p.proname = 'claim_due'")
        row = await cur.fetchone()
        args = [a.strip().split()[0] for a in row["args"].split(",")]
        return args

    def claim_args(self, names, limit, provider):
        vals = {"p_owner": OWNER, "p_providers": list(self.cfg["providers"]),
                "p_provider": provider, "p_lead": datetime.timedelta(seconds=self.cfg["lead_s"]),
                "p_jitter": datetime.timedelta(0),
                "p_lease": datetime.timedelta(seconds=self.cfg.get("lease_s", 70)),
                "p_limit": limit, "p_since": self.since}
        use = [n for n in names if n in vals]
        sql = ("SELECT account_id, provider, refresh_token, scope FROM oauth_refreshd.claim_due("
               + ", ".join(f"{n} => %({n})s" for n in use) + ")")
        return sql, {n: vals[n] for n in use}

    async def claimer(self, conn):
        names = await self.claim_call(conn)
        providers = list(self.cfg["providers"])
        turn = 0
        empty_rounds = 0
        while True:
            # Claim a batch when a batch's worth of slots is free (or nothing is in
            # flight), as the daemon does with max_in_flight and batch_size.
            while self.in_flight - self.active < self.batch and self.active > 0:
                self.check_writer()
                await asyncio.sleep(0.002)
            limit = min(self.batch, self.in_flight - self.active)
            provider = providers[turn % len(providers)]
            turn += 1
            sql, params = self.claim_args(names, limit, provider)
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
            for r in rows:
                self.active += 1
                t = asyncio.create_task(self.refresh(r))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
            if rows:
                empty_rounds = 0
                continue
            empty_rounds += 1
            per_call = 1 if "p_providers" in names else len(providers)
            if empty_rounds >= per_call and self.active == 0 and not self.pending:
                return
            if self.active:
                self.check_writer()
                await asyncio.sleep(0.005)

    def check_writer(self):
        if self.writer_task.done():
            self.writer_task.result()  # raises the writer's error
            raise RuntimeError("the writer stopped")

    async def writer(self, conn):
        while True:
            await self.wake_writer.wait()
            self.wake_writer.clear()
            while self.pending:
                # Let a batch fill for a moment unless it is full already.
                if len(self.pending) < self.batch and self.active > len(self.pending):
                    await asyncio.sleep(0.01)
                batch, self.pending = self.pending[:self.batch], self.pending[self.batch:]
                cols = {k: [b[k] for b in batch] for k in
                        ("ids", "old", "at", "rt", "idt", "exp", "scope", "tt")}
                async with conn.transaction():
                    # The trigger would recompute account_state for each row (and
                    # notify): this statement writes it itself, as store_refreshed does.
                    await conn.execute("SELECT set_config('oauth_refreshd.caller_keeps_state', "
                                       "'on', true)")
                    cur = await conn.execute(WRITE_SQL, cols)
                    written = (await cur.fetchone())[0]
                self.refreshed += written
                self.conflicts += len(batch) - written
                self.active -= len(batch)

    # ---- one account -------------------------------------------------------------------

    async def refresh(self, row):
        prov = row["provider"]
        pc = self.cfg["providers"][prov]
        try:
            old_ct = row["refresh_token"]
            rt = self.fernet.decrypt(old_ct.encode()).decode()
            form = {"grant_type": "refresh_token", "refresh_token": rt,
                    "client_id": pc["client_id"], "client_secret": pc["client_secret"]}
            if prov == "microsoft":
                scope = row["scope"] or ""
                form["scope"] = scope + (" offline_access" if "offline_access" not in scope
                                         else "")
            async with self.session.post(pc["token_url"], data=form,
                                         headers={"Accept": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            ans = json.loads(body)
            now = datetime.datetime.now(datetime.timezone.utc)
            enc = self.fernet.encrypt
            self.pending.append({
                "ids": row["account_id"], "old": old_ct,
                "at": enc(ans["access_token"].encode()).decode(),
                "rt": enc(ans["refresh_token"].encode()).decode()
                if ans.get("refresh_token") else None,
                "idt": enc(ans["id_token"].encode()).decode() if ans.get("id_token") else None,
                "exp": now + datetime.timedelta(seconds=int(ans.get("expires_in", 3600))),
                "scope": ans.get("scope"), "tt": ans.get("token_type")})
            self.wake_writer.set()
        except Exception as e:  # noqa: BLE001 - a failed account is counted, not fatal
            self.failed += 1
            self.active -= 1
            if self.failed <= 5:
                log(f"account {row['account_id']}: {type(e).__name__}: {e}")

    # ---- the run -----------------------------------------------------------------------

    async def run(self):
        ctx = ssl.create_default_context(cafile=self.cfg.get("ca_file"))
        conn_claim = await psycopg.AsyncConnection.connect(self.cfg["dsn"], autocommit=True,
                                                           row_factory=dict_row)
        conn_write = await psycopg.AsyncConnection.connect(self.cfg["dsn"], autocommit=True)
        cur = await conn_claim.execute("SELECT now() AS now")
        self.since = (await cur.fetchone())["now"]
        connector = aiohttp.TCPConnector(limit=self.in_flight, ssl=ctx)
        async with aiohttp.ClientSession(connector=connector) as self.session:
            self.writer_task = asyncio.create_task(self.writer(conn_write))
            try:
                await self.claimer(conn_claim)
            finally:
                self.writer_task.cancel()
        await conn_claim.close()
        await conn_write.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="JSON: dsn, keys_file, ca_file, in_flight, batch_size, "
                                   "lead_s, providers {name: {token_url, client_id, "
                                   "client_secret}}")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    peer = Peer(cfg)
    t = time.monotonic()
    asyncio.run(peer.run())
    log(f"conflicts (refresh token changed meanwhile, not written): {peer.conflicts}")
    log(f"exiting: {peer.refreshed} refreshed, {peer.failed} failed, 0 revoked "
        f"in {time.monotonic() - t:.2f}s")
    return 0 if peer.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
