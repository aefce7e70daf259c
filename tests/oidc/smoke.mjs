// Smoke test for provider.mjs: `node tests/oidc/smoke.mjs` (exit 0 = pass).
//
// Starts the provider, checks discovery + JWKS, then drives full authorization
// code + PKCE flows over plain HTTP the way a browser would (one cookie jar for
// all flows = one browser): authorization endpoint -> login form -> POST ->
// resume -> redirect to the client's redirect_uri (captured, never followed).
// Exchanges the code, verifies the RS256 ID token against the JWKS and checks
// its claims. Rewrites accounts_file between flows to show groups change.

import { spawn } from 'node:child_process';
import {
  createHash, createPublicKey, randomBytes, verify,
} from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const dir = mkdtempSync(join(tmpdir(), 'custody-oidc-smoke-'));
const accountsFile = join(dir, 'accounts.json');
const client = {
  client_id: 'custody-e2e',
  client_secret: 'custody-e2e-secret',
  // Nothing listens here: the flow stops at the redirect to this URI.
  redirect_uris: ['http://127.0.0.1:9/auth/oidc/callback'],
};
const writeAccounts = (accounts) => writeFileSync(accountsFile, JSON.stringify(accounts));
writeFileSync(join(dir, 'config.json'), JSON.stringify({
  clients: [client], accounts_file: accountsFile, host: '127.0.0.1',
}));
writeAccounts({ 'alice@corp.example': { groups: ['model-risk'] } });

// --- start the provider and wait for the LISTENING line ---------------------
const child = spawn(process.execPath, [
  fileURLToPath(new URL('provider.mjs', import.meta.url)), join(dir, 'config.json'),
], { stdio: ['ignore', 'pipe', 'inherit'] });
const stdoutLines = [];
const issuer = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('provider did not print LISTENING')), 20000);
  child.once('exit', (code) => reject(new Error(`provider exited early (${code})`)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    stdoutLines.push(line);
    const m = /^LISTENING (http:\/\/\S+)$/.exec(line);
    if (m && stdoutLines.length === 1) { clearTimeout(timer); resolve(m[1]); }
  });
});
console.log(`provider up: ${issuer}`);

// --- minimal cookie jar (one "browser") --------------------------------------
const jar = new Map();
async function request(url, init = {}) {
  const headers = { ...init.headers };
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  for (const sc of res.headers.getSetCookie()) {
    const [pair, ...attrs] = sc.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    // Same rule a browser applies on http: SameSite=None needs Secure.
    assert.ok(!/samesite=none/i.test(sc) || /;\s*secure/i.test(sc), `cookie a browser would drop: ${sc}`);
    if (attrs.some((a) => /expires=Thu, 01 Jan 1970/i.test(a))) jar.delete(name);
    else jar.set(name, pair.slice(i + 1));
  }
  return res;
}
const b64url = (buf) => Buffer.from(buf).toString('base64url');

async function verifyIdToken(idToken, jwks) {
  const [h, p, s] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  assert.equal(header.alg, 'RS256');
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, 'ID token kid not in JWKS');
  const ok = verify('RSA-SHA256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
  assert.ok(ok, 'ID token signature invalid');
  return JSON.parse(Buffer.from(p, 'base64url'));
}

// One full sign-in; returns the verified ID token claims.
async function signIn(login, { auth = 'client_secret_basic' } = {}) {
  const verifier = b64url(randomBytes(32));
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const authUrl = new URL(discovery.authorization_endpoint);
  authUrl.search = new URLSearchParams({
    client_id: client.client_id,
    redirect_uri: client.redirect_uris[0],
    response_type: 'code',
    scope: 'openid email profile groups',
    state,
    nonce,
    code_challenge: b64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
  });

  // Follow redirects until the login form page (must appear on every sign-in).
  let res = await request(authUrl);
  let url = authUrl;
  while (res.status >= 300 && res.status < 400) {
    url = new URL(res.headers.get('location'), url);
    assert.ok(url.href.startsWith(issuer), `left the provider before logging in: ${url}`);
    res = await request(url);
  }
  const html = await res.text();
  assert.equal(res.status, 200, html);
  const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
  assert.ok(action && /name="login"/.test(html) && /name="password"/.test(html), `no login form:\n${html}`);

  // Post the login form, then follow redirects until we leave the provider.
  res = await request(new URL(action, url), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ prompt: 'login', login, password: 'anything' }),
  });
  url = new URL(action, url);
  while (res.status >= 300 && res.status < 400) {
    url = new URL(res.headers.get('location'), url);
    if (!url.href.startsWith(issuer)) break;
    res = await request(url);
  }
  assert.ok(url.href.startsWith(client.redirect_uris[0]), `expected redirect to client, got ${res.status} ${url}\n${await res.text()}`);
  assert.equal(url.searchParams.get('state'), state);
  assert.equal(url.searchParams.get('iss'), issuer);
  const code = url.searchParams.get('code');
  assert.ok(code, `no code in ${url}`);

  // Code exchange with the PKCE verifier.
  const body = new URLSearchParams({
    grant_type: 'authorization_code', code, redirect_uri: client.redirect_uris[0], code_verifier: verifier,
  });
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (auth === 'client_secret_basic') {
    headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64')}`;
  } else {
    body.set('client_id', client.client_id);
    body.set('client_secret', client.client_secret);
  }
  const tokenRes = await fetch(discovery.token_endpoint, { method: 'POST', headers, body });
  const tokens = await tokenRes.json();
  assert.equal(tokenRes.status, 200, JSON.stringify(tokens));
  const claims = await verifyIdToken(tokens.id_token, jwks);
  assert.equal(claims.iss, issuer);
  assert.equal(claims.aud, client.client_id);
  assert.equal(claims.nonce, nonce);
  return claims;
}

let failed = false;
let discovery;
let jwks;
try {
  discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  assert.equal(discovery.issuer, issuer);
  assert.deepEqual(discovery.code_challenge_methods_supported, ['S256']);
  assert.ok(discovery.scopes_supported.includes('groups'));
  jwks = await (await fetch(discovery.jwks_uri)).json();
  assert.ok(jwks.keys.some((k) => k.kty === 'RSA' && k.alg === 'RS256' && !k.d), 'JWKS');
  console.log('discovery + JWKS ok');

  // PKCE is mandatory: an authorization request without it is refused.
  const noPkce = new URL(discovery.authorization_endpoint);
  noPkce.search = new URLSearchParams({
    client_id: client.client_id, redirect_uri: client.redirect_uris[0], response_type: 'code', scope: 'openid', state: 'x',
  });
  const refused = new URL((await fetch(noPkce, { redirect: 'manual' })).headers.get('location'));
  assert.equal(refused.searchParams.get('error'), 'invalid_request');
  console.log(`no-PKCE request refused: ${refused.searchParams.get('error_description')}`);

  const first = await signIn('alice@corp.example', { auth: 'client_secret_basic' });
  console.log('sign-in 1 (client_secret_basic) ID token claims:', first);
  assert.equal(first.sub, 'alice@corp.example');
  assert.equal(first.email, 'alice@corp.example');
  assert.equal(first.email_verified, true);
  assert.equal(first.name, 'alice@corp.example');
  assert.deepEqual(first.groups, ['model-risk']);

  // Same browser (same cookie jar): the login form must show again and the
  // rewritten accounts file must be picked up.
  writeAccounts({
    'alice@corp.example': { groups: ['model-risk', 'custody-admins'] },
    'bob@corp.example': { email_verified: false },
  });
  const second = await signIn('alice@corp.example', { auth: 'client_secret_post' });
  console.log('sign-in 2 (client_secret_post, accounts file rewritten) ID token claims:', second);
  assert.deepEqual(second.groups, ['model-risk', 'custody-admins']);

  // A different user in the same browser just signs in (no logout dance).
  const third = await signIn('bob@corp.example');
  console.log('sign-in 3 (other user, same browser) ID token claims:', third);
  assert.equal(third.sub, 'bob@corp.example');
  assert.equal(third.email_verified, false);
  assert.deepEqual(third.groups, []);

  assert.equal(stdoutLines.length, 1, `unexpected stdout: ${stdoutLines.join('\n')}`);
  console.log('SMOKE OK');
} catch (err) {
  failed = true;
  console.error('SMOKE FAILED:', err);
} finally {
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.kill('SIGTERM');
  const { code, signal } = await exited;
  if (code !== 0) {
    failed = true;
    console.error(`provider did not exit cleanly on SIGTERM (code ${code}, signal ${signal})`);
  }
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
