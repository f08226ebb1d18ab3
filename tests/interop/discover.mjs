// openid-client (panva) discovery against a running Warrant: prints the metadata it accepted.
// Usage: node discover.mjs ISSUER_URL CLIENT_ID
import * as client from 'openid-client';

const [issuer, clientId] = process.argv.slice(2);
const options = issuer.startsWith('http:') ? { execute: [client.allowInsecureRequests] } : {};
try {
  const config = await client.discovery(new URL(issuer), clientId, undefined, undefined, options);
  process.stdout.write(JSON.stringify(config.serverMetadata()));
} catch (err) {
  process.stderr.write(`discovery failed: ${err.name}: ${err.message}\n`);
  process.exit(1);
}
