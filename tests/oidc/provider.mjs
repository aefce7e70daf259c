// A real OpenID Connect provider (panva/oidc-provider, OpenID Certified) for
// Custody's end-to-end tests.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG.json:
//   {"clients": [{"client_id": "...", "client_secret": "...",
//                 "redirect_uris": ["http://127.0.0.1:PORT/sign-in/oidc/callback"]}],
//    "accounts_file": "/abs/path/accounts.json",
//    "host": "127.0.0.1", "port": 0}   (port: optional, default 0 = any free port)
//
// stdout contract: exactly one line, `LISTENING http://<host>:<port>`, once the
// server accepts connections. That URL is the issuer (no trailing slash).
// Everything else (oidc-provider notices, errors) goes to stderr.
// SIGTERM / SIGINT: closes the server and exits 0.
//
// Sign-in uses oidc-provider's built-in development login form
// (devInteractions): any login name and any non-empty password are accepted.
// There is no consent screen and every authorization request shows the login
// form again (no SSO session is ever reused), see below.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints some notices with console.info (stdout). Keep stdout for
// the LISTENING line only so the parent process can parse it reliably.
console.log = console.info = console.debug = (...args) => console.error(...args);

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const host = config.host ?? '127.0.0.1';
const accountsFile = config.accounts_file;

// Read on every claims lookup (never cached) so a test can rewrite the file to
// change a user's groups between two sign-ins.
function accountEntry(login) {
  if (!accountsFile) return {};
  let all;
  try {
    all = JSON.parse(readFileSync(accountsFile, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return {};
    throw err;
  }
  return all[login] ?? {};
}

// A fresh RS256 signing key per run; published at /jwks.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  use: 'sig',
  alg: 'RS256',
};

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, host, resolve);
});
const issuer = `http://${host}:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // Registered method; oidc-provider accepts client_secret_post as well for
    // any client registered with client_secret_basic (and vice versa).
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  })),
  responseTypes: ['code'],
  jwks: { keys: [signingKey] },
  cookies: {
    keys: [randomBytes(32).toString('hex')],
    // Default long-lived cookie is SameSite=None, which browsers drop unless it
    // is also Secure (impossible over plain http). Lax works on loopback http.
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  // Explicit lifetimes (seconds); also silences "default ttl function" notices.
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, Grant: 3600, IdToken: 3600, Interaction: 600, Session: 600,
  },
  pkce: { methods: ['S256'], required: () => true },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  // Scope -> claims. `groups` is a custom scope carrying a `groups` claim.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scope-requested claims in the ID token itself, not only /userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
  },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const entry = accountEntry(sub);
        return {
          sub,
          email: sub,
          email_verified: entry.email_verified ?? true,
          name: entry.name ?? sub,
          groups: Array.isArray(entry.groups) ? entry.groups : [],
        };
      },
    };
  },
  // No consent screen: once the user is logged in, grant exactly what was
  // asked for (requested OIDC scopes and `claims` parameter claims).
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
    grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
});

// Force the login form on every sign-in: drop the SSO session cookie from
// every incoming request, so oidc-provider never finds an existing session.
// Each authorization request therefore starts unauthenticated (login prompt),
// and logging in as a different user in the same browser never hits the
// "different account, log out first" auto-submitted form. The resume step
// after the login form creates a new session that is simply never read again.
provider.use(async (ctx, next) => {
  const cookie = ctx.req.headers.cookie;
  if (cookie) {
    const kept = cookie.split(';').filter((c) => !c.trim().startsWith('_session'));
    if (kept.length) ctx.req.headers.cookie = kept.join(';');
    else delete ctx.req.headers.cookie;
  }
  await next();
  // The dev login page @imports a Google Fonts stylesheet; strip it so test
  // browsers never try to reach the internet.
  if (typeof ctx.body === 'string' && ctx.type === 'text/html') {
    ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);/g, '');
  }
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));

server.on('request', provider.callback());
process.stdout.write(`LISTENING ${issuer}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
