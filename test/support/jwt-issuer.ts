import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

/**
 * An issuer of workload tokens on 127.0.0.1, as a Kubernetes API server or GitHub Actions is one:
 * a JWKS (and a discovery document naming it) that the test serves, and tokens signed like theirs
 * (RS256, `kid` in the header). `iss` is whatever the test says, since a cluster's issuer URL is
 * not where its keys are fetched from.
 */
export interface TestIssuer {
  /** http://127.0.0.1:PORT */
  url: string;
  jwksUri: string;
  /** How many times the JWKS was fetched. */
  jwksFetches(): number;
  /** The current key's public JWK (kid, n, e). */
  publicJwk(): JWK;
  /** Signs `claims` with the current key (or the one given); `kid` defaults to that key's. */
  sign(claims: JWTPayload, options?: { kid?: string; key?: CryptoKey; typ?: string }): Promise<string>;
  /** A new key, published in place of the old one. */
  rotate(): Promise<void>;
  close(): Promise<void>;
}

async function newKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomUUID();
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

/** Starts an issuer whose discovery document says `iss` is `issuer` (default: its own URL). */
export async function startTestIssuer(issuer?: string): Promise<TestIssuer> {
  let key = await newKey();
  let fetches = 0;
  let url = '';
  const server = createServer((request, response) => {
    if (request.url === '/openid/v1/jwks') {
      fetches += 1;
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [key.publicJwk] }));
    } else if (request.url === '/.well-known/openid-configuration') {
      response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ issuer: issuer ?? url, jwks_uri: `${url}/openid/v1/jwks` }));
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    jwksUri: `${url}/openid/v1/jwks`,
    jwksFetches: () => fetches,
    publicJwk: () => key.publicJwk,
    sign: (claims, options = {}) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: options.kid ?? key.kid, ...(options.typ ? { typ: options.typ } : {}) })
        .sign(options.key ?? key.privateKey),
    rotate: async () => {
      key = await newKey();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Seconds since the epoch, as JWT times are written. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
