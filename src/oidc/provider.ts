import * as client from 'openid-client';
import type { Logger } from 'pino';
import { ProviderError } from '../errors.js';

export interface ProviderSettings {
  metadataUrl: string;
  clientId: string;
  clientSecret: string;
  /** Overrides what the provider advertises, for providers whose default is wrong. */
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post';
  /** http is refused by openid-client unless allowed; config validation decides when it may be. */
  allowHttp: boolean;
}

const WELL_KNOWN = '/.well-known/openid-configuration';
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;
const REQUEST_TIMEOUT_SECONDS = 10;

/**
 * The sign-in provider as this process knows it: discovered at start with retries and backoff,
 * so a provider that is down makes Gatehouse "not ready" instead of crashing it.
 */
export class ProviderConnection {
  private metadata: client.ServerMetadata | undefined;
  /** Set for multi-tenant issuers (Entra ID's `{tenantid}`), which only discovery can configure. */
  private multiTenant: client.Configuration | undefined;
  private jwksCache: client.ExportedJWKSCache | undefined;
  private lastError: Error | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly firstAttempt: Promise<void>;

  constructor(
    private readonly settings: ProviderSettings,
    private readonly log: Logger,
    private readonly onDiscovery: (ok: boolean) => void = () => undefined,
  ) {
    this.firstAttempt = this.discover(FIRST_RETRY_MS);
  }

  /** Resolves after the first discovery attempt, successful or not. */
  whenAttempted(): Promise<void> {
    return this.firstAttempt;
  }

  get ready(): boolean {
    return this.metadata !== undefined;
  }

  /** Why the provider is not ready, for /readyz and the log; never contains secrets. */
  get problem(): string | undefined {
    if (this.metadata) return undefined;
    return this.lastError?.message ?? 'provider metadata not loaded yet';
  }

  get endSessionEndpoint(): string | undefined {
    return this.metadata?.end_session_endpoint;
  }

  /**
   * A fresh openid-client Configuration for one sign-in. Each gets the shared JWKS cache marked as
   * at least a minute old: openid-client then refetches the JWKS as soon as an ID token names an
   * unknown `kid` (provider key rotation). Refetching on demand is safe here because ID tokens only
   * arrive from the token endpoint over the back channel, never from the browser.
   */
  configuration(): client.Configuration {
    if (!this.metadata) {
      throw new ProviderError('PROVIDER_UNAVAILABLE', `the sign-in provider is not reachable: ${this.problem}`);
    }
    // openid-client marks Entra's common endpoint during discovery so the ID token's issuer is
    // checked against its own tenant; a copy would lose that mark, so that configuration is reused
    // (and follows openid-client's own JWKS refresh rules).
    if (this.multiTenant) return this.multiTenant;
    const config = new client.Configuration(
      this.metadata,
      this.settings.clientId,
      this.settings.clientSecret,
      chooseClientAuth(this.metadata, this.settings),
    );
    config.timeout = REQUEST_TIMEOUT_SECONDS;
    if (this.settings.allowHttp) client.allowInsecureRequests(config);
    // openid-client trusts the TLS channel to the token endpoint instead of the ID token's signature
    // (Core 3.1.3.7 step 6); Gatehouse checks the signature too, which also covers http on loopback.
    client.enableNonRepudiationChecks(config);
    if (this.jwksCache) client.setJwksCache(config, { ...this.jwksCache, uat: this.jwksCache.uat - 60 });
    return config;
  }

  /** Keeps the JWKS a sign-in fetched so the next one need not fetch it again. */
  rememberJwks(config: client.Configuration): void {
    const cache = client.getJwksCache(config);
    if (cache && (!this.jwksCache || cache.uat > this.jwksCache.uat)) this.jwksCache = cache;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
  }

  private async discover(nextDelayMs: number): Promise<void> {
    try {
      const config = await client.discovery(
        issuerUrlOf(this.settings.metadataUrl),
        this.settings.clientId,
        this.settings.clientSecret,
        // Chosen from the metadata once it is known, so the Entra configuration reused as is gets it too.
        (as, ...rest) => chooseClientAuth(as, this.settings)(as, ...rest),
        { execute: this.settings.allowHttp ? [client.allowInsecureRequests] : [], timeout: REQUEST_TIMEOUT_SECONDS },
      );
      this.metadata = config.serverMetadata();
      if (this.metadata.issuer.includes('{tenantid}')) {
        config.timeout = REQUEST_TIMEOUT_SECONDS;
        client.enableNonRepudiationChecks(config);
        this.multiTenant = config;
      }
      this.lastError = undefined;
      this.onDiscovery(true);
      this.log.info({ issuer: this.metadata.issuer }, 'sign-in provider metadata loaded');
    } catch (error) {
      this.lastError = describeDiscoveryError(this.settings.metadataUrl, error);
      this.onDiscovery(false);
      this.log.warn({ err: this.lastError, retryInMs: nextDelayMs }, 'sign-in provider discovery failed');
      if (this.closed) return;
      this.retryTimer = setTimeout(() => void this.discover(Math.min(nextDelayMs * 2, MAX_RETRY_MS)), nextDelayMs);
      this.retryTimer.unref();
    }
  }
}

/** client_secret_basic is the default of OAuth 2.0 (RFC 6749 2.3.1); post only when it is all the provider takes. */
function chooseClientAuth(metadata: client.ServerMetadata, settings: ProviderSettings): client.ClientAuth {
  const secret = settings.clientSecret;
  if (settings.tokenEndpointAuthMethod === 'client_secret_post') return client.ClientSecretPost(secret);
  if (settings.tokenEndpointAuthMethod === 'client_secret_basic') return client.ClientSecretBasic(secret);
  const supported = metadata.token_endpoint_auth_methods_supported;
  if (supported && !supported.includes('client_secret_basic') && supported.includes('client_secret_post')) {
    return client.ClientSecretPost(secret);
  }
  return client.ClientSecretBasic(secret);
}

/**
 * openid-client checks the document's `issuer` only when given the issuer itself (OpenID Connect
 * Discovery 4.3), so the standard suffix is taken off; other URLs are used as they are.
 */
export function issuerUrlOf(metadataUrl: string): URL {
  const url = new URL(metadataUrl);
  if (url.pathname.endsWith(WELL_KNOWN) && !url.search) {
    url.pathname = url.pathname.slice(0, -WELL_KNOWN.length) || '/';
  }
  return url;
}

function describeDiscoveryError(metadataUrl: string, error: unknown): ProviderError {
  const reason =
    error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error);
  return new ProviderError('PROVIDER_DISCOVERY_FAILED', `cannot load ${metadataUrl}: ${reason}`, { cause: error });
}
