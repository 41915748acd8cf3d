// A scripted local HTTP peer for the HTTP specs (14, 16, 19, 23, 33, 37; Node built-ins only).
// usage: node http_peer.js LOGFILE
// Listens on 127.0.0.1 at a free port and prints "PORT PID" as its first
// line.  Every request is appended to LOGFILE as one JSON line
// {method, path, headers, body} before it is answered, so the spec reads
// exactly what tokenpolicy sent.
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');

const log = process.argv[2];
const ACTIVE = 'active-token-abc123';
const ARV_TOKEN = 'v2/zzzzz-gj3su-0123456789abcde/s3cretArvadosTokenValue';
const ARV_UUID = 'zzzzz-gj3su-0123456789abcde';
const jwk = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
let base = '';

function json(res, status, value, headers) {
  const text = JSON.stringify(value);
  res.writeHead(status, Object.assign({ 'Content-Type': 'application/json' }, headers || {}));
  res.end(text);
}

function form(body) {
  const out = {};
  for (const [k, v] of new URLSearchParams(body)) out[k] = v;
  return out;
}

function arvadosRecord(expiresAt) {
  return {
    kind: 'arvados#apiClientAuthorization', uuid: ARV_UUID, api_token: 's3cretArvadosTokenValue',
    owner_uuid: 'zzzzz-tpzed-0123456789abcde', created_at: '2026-11-23T10:00:00.000000000Z',
    expires_at: expiresAt, scopes: ['all'],
  };
}

// The forms in which a careless (or hostile) peer might echo a secret s
// back; spec/19-review_http_spec.lua checks that none reaches a message.
function echoed(s, form, req, body) {
  switch (form) {
    case 'raw': return s;
    case 'pct': return encodeURIComponent(s);
    case 'lower': return encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (x) => x.toLowerCase());
    case 'plus': return new URLSearchParams({ v: s }).toString().slice(2);
    case 'b64': return Buffer.from(s).toString('base64');
    case 'b64url': return Buffer.from(s).toString('base64url');
    case 'header': return req.headers.authorization || '(none)';
    case 'basic': return (req.headers.authorization || '').replace(/^Basic /, '');
    case 'form': return body;
    default: return '(unknown form ' + form + ')';
  }
}

// The client secret of a request: from the form body, or from the Basic header.
function clientSecret(req, body) {
  const f = form(body);
  if (f.client_secret) return f.client_secret;
  const basic = /^Basic (.*)$/.exec(req.headers.authorization || '');
  if (!basic) return '';
  const pair = Buffer.from(basic[1], 'base64').toString('latin1');
  return decodeURIComponent(pair.slice(pair.indexOf(':') + 1));
}

// Arvados tokens whose secret part starts with echo_<form>_ or redirect_
// make the peer misbehave with that token; others are answered normally.
function arvadosTrick(req, res, token) {
  const secret = token.slice(token.lastIndexOf('/') + 1);
  const echo = /^echo_([a-z0-9]+)_/.exec(secret);
  if (echo) {
    const text = echo[1] === 'secret' ? secret : echoed(token, echo[1], req, '');
    json(res, 401, { errors: ['bad token ' + text] });
    return true;
  }
  if (secret.startsWith('redirect_')) {
    res.writeHead(302, { Location: '/x/' + token });
    res.end();
    return true;
  }
  return false;
}

const routes = {
  '/revoke': (req, res) => { res.writeHead(200); res.end(); },
  '/revoke-503': (req, res) =>
    json(res, 503, { error: 'temporarily_unavailable' }, { 'Retry-After': '7' }),
  '/revoke-401': (req, res) => json(res, 401,
    { error: 'invalid_client', error_description: 'Client authentication failed' },
    { 'WWW-Authenticate': 'Basic realm="op"' }),
  '/revoke-400-client': (req, res) => json(res, 400, { error: 'invalid_client' }),
  '/revoke-400': (req, res, body) => json(res, 400, {
    error: 'unsupported_token_type',
    error_description: 'cannot revoke ' + (form(body).token || '') + ' ' + 'x'.repeat(400),
  }),
  '/revoke-500': (req, res) => { res.writeHead(500); res.end('oops'); },
  '/introspect': (req, res, body) => {
    const f = form(body);
    if (f.token === ACTIVE) {
      json(res, 200, { active: true, exp: 1900000000, scope: 'read write', client_id: 'cli', sub: 'alice' });
    } else {
      json(res, 200, { active: false });
    }
  },
  '/introspect-bad': (req, res) => json(res, 200, { exp: 1 }),
  // A redirect to a path that holds the token it was sent (?status=302,
  // 303 or 307; ?enc=pct URL-encodes it first).
  '/to-token': (req, res, body) => {
    const q = new URL(req.url, 'http://peer').searchParams;
    const token = form(body).token || '';
    res.writeHead(Number(q.get('status') || 302),
      { Location: '/x/' + (q.get('enc') === 'pct' ? encodeURIComponent(token) : token) });
    res.end();
  },
  // A redirect to another origin whose host name is the token it was sent.
  '/to-token-host': (req, res, body) => {
    res.writeHead(302, { Location: 'https://' + (form(body).token || '') + '.example/' });
    res.end();
  },
  // A redirect to a path that holds the value of ?s= of the request.
  '/to-query': (req, res) => {
    res.writeHead(302, { Location: '/x/' + new URL(req.url, 'http://peer').searchParams.get('s') });
    res.end();
  },
  // An error whose description echoes the token (?of=token) or the client
  // secret (?of=secret) in the form ?form= names.
  '/echo': (req, res, body) => {
    const q = new URL(req.url, 'http://peer').searchParams;
    const secret = q.get('of') === 'secret' ? clientSecret(req, body) : (form(body).token || '');
    json(res, 400, { error: 'invalid_request', error_description: 'you sent ' + echoed(secret, q.get('form'), req, body) });
  },
  '/meta-redirect/.well-known/openid-configuration': (req, res) => {
    res.writeHead(302, { Location: '/x/peer-chosen-path' });
    res.end();
  },
  '/same-307': (req, res) => { res.writeHead(307, { Location: base + '/revoke' }); res.end(); },
  '/other-host': (req, res) => {
    res.writeHead(302, { Location: base.replace('127.0.0.1', 'localhost') + '/revoke' });
    res.end();
  },
  '/loop': (req, res) => { res.writeHead(302, { Location: base + '/loop' }); res.end(); },
  '/big': (req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });  // chunked: no Content-Length
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let i = 0; i < 32; i++) res.write(chunk);
    res.end();
  },
  // Over the 32 MiB a JWK Set may take (fetch_keys' cap).
  '/bigger': (req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 33; i++) res.write(chunk);
    res.end();
  },
  '/slow': (req, res) => { setTimeout(() => { res.writeHead(200); res.end(); }, 3000); },
  '/jwks': (req, res) => json(res, 200, { keys: [Object.assign({ kid: 'peer-1', use: 'sig', alg: 'ES256' }, jwk)] }),
  '/jwks-other': (req, res) => {
    res.writeHead(302, { Location: base.replace('127.0.0.1', 'localhost') + '/jwks' });
    res.end();
  },
  // For spec/16-jwks_spec.lua: serves the JWKS held in the file named by
  // ?file= (re-read on every request, so the spec rotates keys by rewriting
  // it); a file holding a bare status number makes the answer that status,
  // one holding a fault mode word (hang, trickle, garbage, ...: see fault
  // below) that fault.
  // Each fetch is in the request log, where the spec counts them.
  '/jwks-rotating': (req, res) => {
    const file = new URL(req.url, 'http://peer').searchParams.get('file');
    const text = fs.readFileSync(file, 'utf8');
    if (/^\d{3}$/.test(text.trim())) {
      res.writeHead(Number(text.trim()));
      return res.end();
    }
    if (/^[a-z-]+$/.test(text.trim())) return fault(req, res, text.trim(), new URLSearchParams());
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(text);
  },
  '/issuer/.well-known/openid-configuration': (req, res) => json(res, 200, {
    issuer: base + '/issuer', jwks_uri: base + '/jwks', revocation_endpoint: base + '/revoke',
    introspection_endpoint: base + '/introspect',
  }),
  '/wrong/.well-known/openid-configuration': (req, res) =>
    json(res, 200, { issuer: 'https://evil.example/wrong', jwks_uri: base + '/jwks' }),
  '/.well-known/oauth-authorization-server/as': (req, res) =>
    json(res, 200, { issuer: base + '/as', token_endpoint: base + '/token' }),
  '/arvados/v1/api_client_authorizations/current': (req, res) => {
    if (arvadosTrick(req, res, (req.headers.authorization || '').replace(/^Bearer /, ''))) return;
    if (req.headers.authorization === 'Bearer ' + ARV_TOKEN) {
      json(res, 200, arvadosRecord(null));
    } else {
      json(res, 401, { errors: ['Not logged in'], error_token: '1763900000+abcdef01' });
    }
  },
};

// Fault modes for spec/37-faults_spec.lua: any path under /fault/<mode>
// (so an issuer there has its well-known documents there too) answers
// as <mode> says; its settings come as a query or as path segments
// k=v (/fault/status/code=503/retry=7):
//   hang          accepts the request and never answers
//   trickle       the whole answer (status line first), one byte every
//                 ?every= milliseconds (default 200)
//   trickle-body  the status line and headers at once, then the body one
//                 byte at a time
//   garbage       bytes that are not HTTP, then the connection closes
//   close         closes the connection without a byte of answer
//   not-json      200 with an HTML body labelled application/json
//   status        the status ?code= (default 500), with ?retry= as the
//                 Retry-After header when given (?date=N: an HTTP date N
//                 seconds from now) and an OAuth error body
// /faultiss/<mode>[/k=v...]/.well-known/openid-configuration is a provider
// whose metadata is fine and whose revocation and introspection endpoints
// are /fault/<mode>[/k=v...].
const FAULT_BODY = JSON.stringify({ error: 'temporarily_unavailable', error_description: 'try again later' });

function trickle(socket, text, every) {
  let at = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || at >= text.length) {
      clearInterval(timer);
      if (!socket.destroyed) socket.end();
      return;
    }
    socket.write(text.slice(at, at + 1));
    at += 1;
  }, every);
}

function fault(req, res, mode, q) {
  const every = Number(q.get('every') || 200);
  const body = '{"keys": [], "active": false, "issuer": "nobody"}';
  const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ' + body.length +
    '\r\nConnection: close\r\n\r\n';
  switch (mode) {
    case 'hang': return undefined;
    case 'trickle': return trickle(res.socket, head + body, every);
    case 'trickle-body':
      res.socket.write(head);
      return trickle(res.socket, body, every);
    case 'garbage':
      res.socket.end(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x6e, 0x6f, 0x70, 0x65, 0x0d, 0x0a, 0x0d, 0x0a]));
      return undefined;
    case 'close': return res.socket.destroy();
    case 'not-json':
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end('<html><body>Service temporarily down</body></html>');
    case 'status': {
      const headers = { 'Content-Type': 'application/json' };
      if (q.get('retry') !== null) headers['Retry-After'] = q.get('retry');
      if (q.get('date') !== null) headers['Retry-After'] = new Date(Date.now() + 1000 * Number(q.get('date'))).toUTCString();
      res.writeHead(Number(q.get('code') || 500), headers);
      return res.end(FAULT_BODY);
    }
    default:
      res.writeHead(404);
      return res.end();
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('latin1');
    const url = new URL(req.url, 'http://peer');
    fs.appendFileSync(log, JSON.stringify({ method: req.method, path: req.url, headers: req.headers, body }) + '\n');
    const iss = /^\/faultiss\/(.+)\/\.well-known\/openid-configuration$/.exec(url.pathname);
    if (iss) {
      return json(res, 200, { issuer: base + '/faultiss/' + iss[1], revocation_endpoint: base + '/fault/' + iss[1],
        introspection_endpoint: base + '/fault/' + iss[1] });
    }
    const faulty = /^\/fault\/([a-z-]+)(\/|$)/.exec(url.pathname);
    if (faulty) {
      // Settings come as ?k=v or as path segments k=v (an issuer has no query).
      const q = new URLSearchParams(url.search);
      for (const seg of url.pathname.split('/')) {
        const kv = /^([a-z]+)=(.*)$/.exec(seg);
        if (kv) q.set(kv[1], decodeURIComponent(kv[2]));
      }
      return fault(req, res, faulty[1], q);
    }
    const route = routes[url.pathname];
    if (route) return route(req, res, body);
    if (req.method === 'DELETE' && url.pathname === '/arvados/v1/api_client_authorizations/' + ARV_UUID) {
      if (arvadosTrick(req, res, (req.headers.authorization || '').replace(/^Bearer /, ''))) return;
      return json(res, 200, arvadosRecord('2026-11-23T16:00:00.000000000Z'));
    }
    if (url.pathname === '/logout') {
      if (arvadosTrick(req, res, url.searchParams.get('api_token') || '')) return;
      res.writeHead(303, { Location: 'https://workbench.example/' });
      return res.end();
    }
    return json(res, 404, { error: 'not_found' });
  });
});

server.listen(0, '127.0.0.1', () => {
  base = 'http://127.0.0.1:' + server.address().port;
  process.stdout.write(server.address().port + ' ' + process.pid + '\n');
});
process.on('SIGTERM', () => process.exit(0));
