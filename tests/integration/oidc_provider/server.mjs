// A real OIDC provider (panva/oidc-provider v9) for the mlaas4hep auth integration tests.
//
//   node server.mjs            (env: PORT, KEYS_FILE; binds 127.0.0.1 only)
//
// - Signing keys come from KEYS_FILE (a private JWK Set), so restarting with another file
//   is a key rotation.
// - Grants: client_credentials (service-style tokens for the clients below), the
//   device flow (for `mlaas4hep login`; the dev login form accepts any user name) and, with
//   UI_REDIRECT_URI set, authorization code + PKCE for the web UI (client mlaas4hep-ui).
// - Access tokens are JWTs (resourceIndicators, accessTokenFormat 'jwt') for the
//   resources RS256_RESOURCE, ES256_RESOURCE and OTHER_RESOURCE, carrying wlcg.ver and
//   wlcg.groups.
// Prints "ready <issuer>" on stdout once listening.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const PORT = Number(process.env.PORT || 0);
const ISSUER = `http://127.0.0.1:${PORT}`;
const KEYS = JSON.parse(readFileSync(process.env.KEYS_FILE, 'utf8'));
const RS256_RESOURCE = 'https://mlaas.test/api';
const ES256_RESOURCE = 'https://mlaas.test/es256';
const OTHER_RESOURCE = 'https://other.test/api'; // a token for another service (wrong aud)
// The web UI as a public client (authorization code + PKCE), when its callback is given.
const UI_REDIRECT_URI = process.env.UI_REDIRECT_URI;

const CAPABILITIES = [
  'compute.create', 'compute.read', 'compute.cancel', 'compute.modify',
  'storage.read:/store/user/alice', 'storage.read:/store/user/bob', 'storage.read:/models',
  'storage.create:/models', 'storage.modify:/models', 'mlaas.infer',
];

// wlcg.groups per subject (client id for client_credentials, account id for the device flow).
const GROUPS = {
  alice: ['/cms', '/cms/higgs'],
  bob: ['/cms', '/cms/top'],
  groupie: ['/cms', '/cms/mlaas'],
  admin: ['/cms', '/mlaas/admin'],
};

const secretClient = (id, scope) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  scope,
});

const provider = new Provider(ISSUER, {
  jwks: KEYS,
  clients: [
    secretClient('alice', CAPABILITIES.join(' ')),
    secretClient('bob', CAPABILITIES.join(' ')),
    secretClient('groupie', 'openid'), // no capability scopes: judged by wlcg.groups
    secretClient('admin', CAPABILITIES.join(' ')),
    {
      client_id: 'mlaas4hep-cli',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
      redirect_uris: [],
      response_types: [],
      scope: `openid ${CAPABILITIES.join(' ')}`,
    },
    ...(UI_REDIRECT_URI ? [{
      client_id: 'mlaas4hep-ui',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [UI_REDIRECT_URI],
      scope: `openid ${CAPABILITIES.join(' ')}`,
    }] : []),
  ],
  scopes: ['openid', ...CAPABILITIES],
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  features: {
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RS256_RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        const alg = {
          [RS256_RESOURCE]: 'RS256', [ES256_RESOURCE]: 'ES256', [OTHER_RESOURCE]: 'RS256',
        }[resource];
        if (!alg) throw new Error(`unknown resource ${resource}`);
        return {
          scope: CAPABILITIES.join(' '),
          audience: resource,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const subject = token.accountId || token.clientId;
    return { 'wlcg.ver': '1.0', 'wlcg.groups': GROUPS[subject] || [] };
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));
const server = provider.listen(PORT, '127.0.0.1', () => {
  console.log(`ready ${ISSUER}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
