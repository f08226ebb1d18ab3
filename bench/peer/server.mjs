// The benchmark's peer: panva's oidc-provider (version pinned in package.json), configured to do
// what Warrant's issuer does: publish discovery and a JWKS, and mint RS256 JWT access tokens for
// one audience through the client-credentials grant.
//
//   PEER_CLIENT_SECRET=... node bench/peer/server.mjs --port N [--client-id ID]
//
// The client secret comes from the environment, not argv, where ps would show it.
//
// `python -m bench` (bench/peer_bench.py) starts it on 127.0.0.1, pinned to the server CPU, and
// loads it with wrk exactly as it loads Warrant:
//   GET  /.well-known/openid-configuration
//   GET  /jwks
//   POST /token   grant_type=client_credentials, HTTP Basic client authentication; the answer's
//                 access_token is a JWT signed RS256 (RSA-2048, as Warrant's) with
//                 aud = acme-oidc-service, valid for 300 s (Warrant's default token TTL).
// Tokens in JWT format are not stored; the in-memory adapter is unused on this path.
import { generateKeyPairSync } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const AUDIENCE = 'acme-oidc-service';
// RFC 8707 wants an absolute URI as the resource indicator; the token's aud is AUDIENCE.
const RESOURCE = `urn:warrant:bench:${AUDIENCE}`;
const TOKEN_TTL_SECONDS = 300;

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string', default: 'bench' },
  },
});
const clientSecret = process.env.PEER_CLIENT_SECRET;
if (!values.port || !clientSecret) {
  console.error('usage: PEER_CLIENT_SECRET=... node server.mjs --port N [--client-id ID]');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'peer-rs256', use: 'sig', alg: 'RS256' };

const issuer = `http://127.0.0.1:${values.port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: values['client-id'],
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingKey] },
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'api',
          audience: AUDIENCE,
          accessTokenTTL: TOKEN_TTL_SECONDS,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: { ClientCredentials: TOKEN_TTL_SECONDS },
});

const server = provider.listen(Number(values.port), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${issuer}`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
