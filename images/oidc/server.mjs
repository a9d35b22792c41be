// devdock's demo OpenID Connect provider, for the compose stack's out-of-the-box single sign-on.
//
// It is oidc-provider (https://github.com/panva/node-oidc-provider, OpenID Certified) with:
//   - the users of a JSON file (DEVDOCK_OIDC_USERS): username, name, email, groups. No passwords in the file:
//     each user gets a generated one on first start, printed once and kept in the data volume;
//   - one client, devdock's hub, whose secret is generated too and written where the hub container reads it;
//   - signing keys and cookie keys generated on first start and kept, so tokens and sessions survive restarts;
//   - a login page of its own (oidc-provider leaves the interaction UI to the site).
//
// Usage: server.mjs [serve]        run the provider on DEVDOCK_OIDC_LISTEN_PORT (9000)
//        server.mjs credentials    print the demo users and their passwords, then exit
//
// The issuer is the URL browsers use (DEVDOCK_OIDC_ISSUER, e.g. http://127.0.0.1:9000); the hub reaches the same
// server under another name (http://oidc:9000) for the token and userinfo calls, which oidc-provider answers
// whatever the Host header says. See docs/deployment.md.
import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';

import Provider from 'oidc-provider';

const env = (name, fallback = '') => (process.env[name] ?? '').trim() || fallback;

const publicUrl = env('DEVDOCK_PUBLIC_URL', 'http://localhost:8000').replace(/\/+$/, '');
// The hub serves a loopback address as localhost (users' servers on its subdomains, alice.localhost): its callback
// is on localhost then, whichever loopback address the site wrote.
const hubUrl = publicUrl.replace(/^(https?:\/\/)(127\.0\.0\.1|\[::1\])(?=[:/]|$)/, '$1localhost');
const config = {
  issuer: env('DEVDOCK_OIDC_ISSUER', 'http://127.0.0.1:9000').replace(/\/+$/, ''),
  port: Number(env('DEVDOCK_OIDC_LISTEN_PORT', '9000')),
  dataDir: env('DEVDOCK_OIDC_DATA', '/var/lib/devdock-oidc'),
  clientDir: env('DEVDOCK_OIDC_CLIENT_DIR', '/var/lib/devdock-oidc-client'),
  usersFile: env('DEVDOCK_OIDC_USERS', '/etc/devdock-oidc/users.json'),
  clientId: env('DEVDOCK_OIDC_CLIENT_ID', 'devdock'),
  redirectUris: env('DEVDOCK_OIDC_REDIRECT_URIS', `${hubUrl}/hub/oauth_callback`).split(',').map((s) => s.trim()),
  trustProxy: env('DEVDOCK_OIDC_TRUST_PROXY', '0') === '1',
};
const SCOPES = ['openid', 'profile', 'email', 'groups'];

const log = (...args) => console.log('[devdock-oidc]', ...args);

function fail(message) {
  console.error(`[devdock-oidc] ${message}`);
  process.exit(1);
}

// --- users and state ----------------------------------------------------------------------------------------------

const USERNAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

function loadUsers(file) {
  let data;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(`cannot read the users file ${file}: ${e.message}`);
  }
  const users = new Map();
  for (const user of data.users ?? []) {
    if (!USERNAME.test(user.username ?? '')) fail(`${file}: invalid username ${JSON.stringify(user.username)}`);
    if ('password' in user) fail(`${file}: ${user.username} has a password; passwords are generated, not written down`);
    users.set(user.username, {
      username: user.username,
      name: String(user.name ?? user.username),
      email: String(user.email ?? ''),
      groups: (user.groups ?? []).map(String),
    });
  }
  if (!users.size) fail(`${file} defines no users`);
  return users;
}

/** Write a secret file atomically, readable by its owner only. */
function writeSecret(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function readJson(file, fallback) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if (e.code === 'ENOENT') return fallback;
    return fail(`cannot read ${file}: ${e.message}`);
  }
}

const token = (bytes = 24) => randomBytes(bytes).toString('base64url');

/** Keys and secrets: made once, then read back on every start. */
function loadState(dir) {
  const file = path.join(dir, 'state.json');
  const state = readJson(file, null);
  if (state) return state;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: token(8), use: 'sig', alg: 'RS256' };
  const created = { jwks: { keys: [jwk] }, cookieKeys: [token(32), token(32)], clientSecret: token(32) };
  writeSecret(file, JSON.stringify(created, null, 1));
  log('generated signing keys, cookie keys and the hub client secret');
  return created;
}

/** A password for every user of the file, generated the first time a user is seen. Returns the new ones. */
function loadCredentials(dir, users) {
  const file = path.join(dir, 'credentials.json');
  const credentials = readJson(file, {});
  const generated = [];
  for (const username of users.keys()) {
    if (!credentials[username]) {
      credentials[username] = token(12);
      generated.push(username);
    }
  }
  if (generated.length) writeSecret(file, JSON.stringify(credentials, null, 1));
  return { credentials, generated };
}

function passwordMatches(expected, given) {
  // Compare digests, so that the comparison takes the same time whatever the lengths.
  const digest = (s) => createHash('sha256').update(String(s)).digest();
  return typeof expected === 'string' && timingSafeEqual(digest(expected), digest(given));
}

function credentialsTable(users, credentials) {
  const width = Math.max(...[...users.keys()].map((u) => u.length));
  return [...users.values()]
    .map((u) => `    ${u.username.padEnd(width)}  ${credentials[u.username]}    groups: ${u.groups.join(', ') || '-'}`)
    .join('\n');
}

// --- pages --------------------------------------------------------------------------------------------------------

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
  body { font-family: system-ui, sans-serif; background: #f3f4f6; margin: 0; }
  main { max-width: 24rem; margin: 8vh auto; background: #fff; padding: 2rem; border-radius: 8px;
         box-shadow: 0 2px 8px rgba(0,0,0,.12); }
  h1 { font-size: 1.3rem; margin-top: 0; }
  label { display: block; margin: 1rem 0 .3rem; }
  input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
  button { margin-top: 1.4rem; width: 100%; padding: .6rem; font-size: 1rem; background: #2563eb; color: #fff;
           border: 0; border-radius: 4px; cursor: pointer; }
  .error { color: #b91c1c; background: #fee2e2; padding: .6rem; border-radius: 4px; }
  .note { color: #6b7280; font-size: .85rem; margin-top: 1.5rem; }
</style>
</head>
<body><main>${body}</main></body>
</html>`;
}

function loginPage(uid, { username = '', error = '' } = {}) {
  return page(
    'Sign in · devdock demo identity provider',
    `<h1>Sign in to devdock</h1>
<p>devdock demo identity provider</p>
${error ? `<p class="error" id="login-error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="username">Username</label>
  <input id="username" name="username" value="${escapeHtml(username)}" required autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <button type="submit" id="sign-in">Sign in</button>
</form>
<p class="note">Demo accounts and their passwords were printed when this provider first started
(<code>docker compose logs oidc</code>).</p>`,
  );
}

async function readForm(req, limit = 16 * 1024) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// --- the provider -------------------------------------------------------------------------------------------------

function makeProvider(users, credentials, state) {
  const provider = new Provider(config.issuer, {
    clients: [
      {
        client_id: config.clientId,
        client_secret: state.clientSecret,
        client_name: 'devdock',
        redirect_uris: config.redirectUris,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        // oauthenticator posts client_id and client_secret in the body unless OAUTH2_BASIC_AUTH is set.
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: state.jwks,
    cookies: { keys: state.cookieKeys },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: SCOPES,
    features: { devInteractions: { enabled: false } },
    pkce: { methods: ['S256'], required: () => true },
    ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 8 * 3600, Grant: 8 * 3600 },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const user = users.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            preferred_username: user.username,
            name: user.name,
            email: user.email || undefined,
            email_verified: Boolean(user.email),
            groups: user.groups,
          };
        },
      };
    },
    // The only client is the site's own hub: consent is given by whoever set the stack up, so no consent page.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      if (!oidc.session?.accountId) return undefined;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      const grant = grantId
        ? await oidc.provider.Grant.find(grantId)
        : new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
      grant.addOIDCScope(SCOPES.join(' '));
      await grant.save();
      return grant;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page(
        'Sign-in error · devdock demo identity provider',
        `<h1>Sign-in error</h1><p class="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description ?? '')}</p>
<p><a href="${escapeHtml(hubUrl)}/hub/">Back to devdock</a></p>`,
      );
    },
  });
  provider.proxy = config.trustProxy;

  // The login page: GET shows the form, POST checks the password and hands the result back to the provider.
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/.exec(ctx.path);
    if (!match) return next();
    ctx.set('Cache-Control', 'no-store');
    ctx.set('X-Frame-Options', 'DENY');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== match[1] || details.prompt.name !== 'login') {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Sign-in error', '<h1>This sign-in page has expired</h1><p>Go back to devdock and try again.</p>');
      return undefined;
    }
    if (!match[2]) {
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, { username: details.params.login_hint ?? '' });
      return undefined;
    }
    if (ctx.method !== 'POST') {
      ctx.status = 405;
      return undefined;
    }
    const form = await readForm(ctx.req);
    const username = (form.get('username') ?? '').trim();
    if (!users.has(username) || !passwordMatches(credentials[username], form.get('password') ?? '')) {
      log(`sign-in refused for ${JSON.stringify(username.slice(0, 64))}: wrong username or password`);
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, { username, error: 'Wrong username or password.' });
      return undefined;
    }
    log(`${username} signed in`);
    const redirectTo = await provider.interactionResult(
      ctx.req,
      ctx.res,
      { login: { accountId: username } },
      { mergeWithLastSubmission: false },
    );
    ctx.status = 303;
    ctx.redirect(redirectTo);
    return undefined;
  });
  return provider;
}

// --- main ---------------------------------------------------------------------------------------------------------

function main(command) {
  const users = loadUsers(config.usersFile);
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const state = loadState(config.dataDir);
  const { credentials, generated } = loadCredentials(config.dataDir, users);

  if (command === 'credentials') {
    console.log(credentialsTable(users, credentials));
    return;
  }
  if (command !== 'serve') fail(`unknown command ${JSON.stringify(command)} (serve | credentials)`);

  // The hub reads the client secret from here (a volume it mounts read-only).
  fs.mkdirSync(config.clientDir, { recursive: true });
  writeSecret(path.join(config.clientDir, 'client-secret'), state.clientSecret);

  const provider = makeProvider(users, credentials, state);
  const server = createServer(provider.callback());
  server.listen(config.port, '0.0.0.0', () => {
    const banner = [
      '',
      '================================ devdock =================================',
      `  Open ${hubUrl} and sign in at the demo identity provider`,
      `  (${config.issuer}, client "${config.clientId}").`,
    ];
    if (generated.length) {
      banner.push(
        `  Demo accounts (generated now, kept in the oidc-data volume):`,
        '',
        credentialsTable(new Map([...users].filter(([u]) => generated.includes(u))), credentials),
        '',
        '  Show them again with:',
      );
    } else {
      banner.push('  Demo accounts were printed on first start; show them again with:');
    }
    banner.push(
      '  docker compose exec oidc devdock-oidc credentials',
      '==========================================================================',
      '',
    );
    console.log(banner.join('\n'));
  });
  const stop = () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref(); // idle keep-alive connections must not hold the stop up
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main(process.argv[2] ?? 'serve');
