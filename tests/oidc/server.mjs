// server.mjs — a real, certified OpenID Provider (the npm package oidc-provider)
// for the integration tests: the daemon's google, microsoft and oauth2 dialects
// refresh against it, and it judges them. Refresh tokens rotate on every use,
// and presenting a consumed one revokes the whole grant (oidc-provider's reuse
// detection), so a daemon that ever burns a rotated token is caught.
//
// It owns: an HTTPS listener on loopback with the test PKI's certificate, the
// clients named on the command line, and a small admin API under /_test/ (the
// tests mint grants with it; no real provider has one). It must never listen
// beyond loopback.
//
// Usage: node server.mjs --port N --cert F --key F --clients JSON
//   JSON: [{"client_id": "...", "client_secret": "...",
//           "token_endpoint_auth_method": "client_secret_post"}, ...]
// Prints "oidc: listening on https://127.0.0.1:N" once it accepts requests.

import https from 'node:https';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    clients: { type: 'string' },
    'access-ttl': { type: 'string', default: '3600' },
  },
});
if (!['127.0.0.1', '::1', 'localhost'].includes(args.host)) {
  console.error('oidc: the test provider listens on loopback only');
  process.exit(64);
}

const issuer = `https://${args.host.includes(':') ? `[${args.host}]` : args.host}:${args.port}`;
const clients = JSON.parse(args.clients).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  redirect_uris: ['https://app.invalid/cb'],
  response_types: ['code'],
  ...c,
}));

// oidc-provider's own memory adapter is an LRU of 1,000 entries: a few hundred
// accounts with a grant, an access token and two refresh tokens each would be
// evicted and read as "not active". The tests need every entry kept, so this
// adapter is a plain Map (expiry honoured on read).
const store = new Map();
const grants = new Map(); // grantId -> Set of keys
class MapAdapter {
  constructor(name) { this.name = name; }
  key(id) { return `${this.name}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const k = this.key(id);
    store.set(k, { payload, until: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
      grants.get(payload.grantId).add(k);
    }
  }
  async find(id) {
    const e = store.get(this.key(id));
    if (!e || e.until < Date.now()) return undefined;
    return e.payload;
  }
  async findByUid(uid) {
    for (const [k, e] of store) if (k.startsWith(`${this.name}:`) && e.payload.uid === uid) return e.payload;
    return undefined;
  }
  async findByUserCode(code) {
    for (const [k, e] of store) if (k.startsWith(`${this.name}:`) && e.payload.userCode === code) return e.payload;
    return undefined;
  }
  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const k of grants.get(grantId) || []) store.delete(k);
    grants.delete(grantId);
  }
}

// What the judge saw: every refresh grant, and every reuse of a consumed token.
const stats = { refreshes: 0, reuse: 0, errors: {} };

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients,
  // The tests make the accounts; every subject exists.
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  features: {
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
  },
  // Rotate on every use: the strictest provider a refresher can meet.
  rotateRefreshToken: true,
  ttl: {
    AccessToken: Number(args['access-ttl']),
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  // No cookies are ever used here; fixed keys keep the start quiet.
  cookies: { keys: ['oauth-refreshd-test-cookie-key'] },
  // Refresh tokens are not bound to a session in these tests.
  expiresWithSession: async () => false,
  issueRefreshToken: async () => true,
});
provider.proxy = false;

provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') stats.refreshes += 1;
});
provider.on('grant.error', (ctx, err) => {
  // error_detail is the specific reason (error_description stays generic).
  const key = `${err.error}: ${err.error_detail || err.error_description}`;
  stats.errors[key] = (stats.errors[key] || 0) + 1;
  if (err.error_detail === 'refresh token already used') stats.reuse += 1;
});

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

function reply(res, status, obj) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(obj));
}

// POST /_test/grant {"client_id", "sub", "scope"} -> {"refresh_token", "grant_id"}
async function mintGrant(body) {
  const client = await provider.Client.find(body.client_id);
  if (!client) throw new Error(`no client ${body.client_id}`);
  const scope = body.scope || 'openid offline_access';
  const grant = new provider.Grant({ accountId: body.sub, clientId: client.clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const rt = new provider.RefreshToken({
    accountId: body.sub,
    client,
    grantId,
    scope,
    gty: 'authorization_code',
    authTime: Math.floor(Date.now() / 1000),
  });
  const value = await rt.save();
  return { refresh_token: value, grant_id: grantId };
}

// POST /_test/revoke {"grant_id"}: the user removed the app at the provider.
async function revokeGrant(body) {
  const grant = await provider.Grant.find(body.grant_id);
  if (grant) await grant.destroy();
  for (const model of ['RefreshToken', 'AccessToken']) {
    await provider[model].adapter.revokeByGrantId(body.grant_id);
  }
  return { revoked: body.grant_id };
}

async function admin(req, res) {
  try {
    if (req.method === 'POST' && req.url === '/_test/grant') return reply(res, 200, await mintGrant(await readJson(req)));
    if (req.method === 'POST' && req.url === '/_test/revoke') return reply(res, 200, await revokeGrant(await readJson(req)));
    if (req.method === 'GET' && req.url === '/_test/stats') return reply(res, 200, stats);
    return reply(res, 404, { error: 'not_found' });
  } catch (e) {
    return reply(res, 500, { error: String(e && e.message) });
  }
}

const callback = provider.callback();
const server = https.createServer({
  cert: fs.readFileSync(args.cert),
  key: fs.readFileSync(args.key),
}, (req, res) => (req.url.startsWith('/_test/') ? admin(req, res) : callback(req, res)));
server.keepAliveTimeout = 30000;
server.listen(Number(args.port), args.host, () => {
  console.log(`oidc: listening on ${issuer}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
