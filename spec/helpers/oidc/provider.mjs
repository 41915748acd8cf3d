// A local OpenID provider (oidc-provider) for spec/15-oidc_spec.lua.
//
// Listens on 127.0.0.1 at a free port and prints "READY <port>" once it
// accepts connections; the issuer is http://127.0.0.1:<port>.  The client
// "tp-client" (secret "tp-secret", HTTP Basic) and "tp-post-client" (same
// secret, form body) may use the client_credentials grant.  With
// resource=https://rucio.example.org the access token is an RS256 JWT for
// that audience; without a resource it is opaque (and can be revoked and
// introspected).
//
// POST /__admin/rotate replaces the provider in-process by one with a fresh
// signing key (a new kid) on the same port and answers {"kid": "..."}.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const RESOURCE = 'https://rucio.example.org';
const RESOURCE_SCOPE = 'storage.read:/ storage.modify:/';

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `tp-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

function ownToken(ctx, client, token) {
  return token.clientId === client.clientId;
}

function makeProvider(issuer) {
  const key = signingKey();
  const client = {
    client_secret: 'tp-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  };
  const provider = new Provider(issuer, {
    clients: [
      { ...client, client_id: 'tp-client', token_endpoint_auth_method: 'client_secret_basic' },
      { ...client, client_id: 'tp-post-client', token_endpoint_auth_method: 'client_secret_post' },
    ],
    jwks: { keys: [key] },
    ttl: { ClientCredentials: 600 },
    cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // A client may revoke and introspect only the tokens issued to it.
      revocation: { enabled: true, allowedPolicy: ownToken },
      introspection: { enabled: true, allowedPolicy: ownToken },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== RESOURCE) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: RESOURCE_SCOPE,
            audience: RESOURCE,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  return { provider, callback: provider.callback(), kid: key.kid };
}

let current;
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/__admin/rotate') {
    current = makeProvider(current.provider.issuer);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kid: current.kid }));
    return;
  }
  current.callback(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  current = makeProvider(`http://127.0.0.1:${port}`);
  process.stdout.write(`READY ${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
