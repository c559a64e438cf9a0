import * as client from 'openid-client';
import type { Logger } from 'pino';
import { ProviderError } from '../errors.js';

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post';

export interface ProviderSettings {
  metadataUrl: string;
  clientId: string;
  clientSecret: string;
  /** Pins the method; unset, it is chosen from discovery and the credentials, and corrected once if refused. */
  tokenEndpointAuthMethod?: ClientAuthMethod;
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
  /** How the client authenticates at the token endpoint; chosen at discovery, switched once if refused. */
  private clientAuth: ClientAuthMethod = 'client_secret_basic';
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
      clientAuthOf(this.clientAuth, this.settings.clientSecret),
    );
    config.timeout = REQUEST_TIMEOUT_SECONDS;
    if (this.settings.allowHttp) client.allowInsecureRequests(config);
    // openid-client trusts the TLS channel to the token endpoint instead of the ID token's signature
    // (Core 3.1.3.7 step 6); Gatehouse checks the signature too, which also covers http on loopback.
    client.enableNonRepudiationChecks(config);
    if (this.jwksCache) client.setJwksCache(config, { ...this.jwksCache, uat: this.jwksCache.uat - 60 });
    return config;
  }

  /**
   * Runs a token request. RFC 6749 2.3.1 has the credentials form-encoded inside Basic, and some
   * certified providers (glewlwyd, LemonLDAP::NG) compare them undecoded, so a secret with `-` is
   * refused under client_secret_basic; others accept only what they advertise first. When the
   * provider refuses the client's authentication and the method was not pinned, the other
   * advertised method is tried once, and kept if it works. A provider checks the client before
   * the code or refresh token, so the first attempt has not used it up.
   */
  async tokenRequest<T>(request: (config: client.Configuration) => Promise<T>): Promise<T> {
    const config = this.configuration();
    const tried = this.clientAuth;
    try {
      const result = await request(config);
      this.rememberJwks(config);
      return result;
    } catch (error) {
      const other = this.otherAdvertisedMethod(tried);
      if (!isClientAuthRefusal(error) || other === undefined) throw error;
      this.log.warn(
        { refused: tried, trying: other, error: describeTokenError(error) },
        'the sign-in provider refused the client authentication; trying the other method it advertises',
      );
      if (this.clientAuth === tried) this.clientAuth = other;
      const retried = this.configuration();
      const result = await request(retried);
      this.rememberJwks(retried);
      this.log.info(
        { method: other },
        `the sign-in provider accepts ${other}, not ${tried}; set auth_provider.token_endpoint_auth_method: ${other} to use it from the start`,
      );
      return result;
    }
  }

  private otherAdvertisedMethod(tried: ClientAuthMethod): ClientAuthMethod | undefined {
    if (this.settings.tokenEndpointAuthMethod || !this.metadata) return undefined;
    const other = tried === 'client_secret_basic' ? 'client_secret_post' : 'client_secret_basic';
    return advertisedMethods(this.metadata).includes(other) ? other : undefined;
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
        // Read at each request, so the Entra configuration reused as is follows a switch too.
        (as, ...rest) => clientAuthOf(this.clientAuth, this.settings.clientSecret)(as, ...rest),
        { execute: this.settings.allowHttp ? [client.allowInsecureRequests] : [], timeout: REQUEST_TIMEOUT_SECONDS },
      );
      this.metadata = config.serverMetadata();
      this.clientAuth = chooseClientAuth(this.metadata, this.settings);
      if (this.metadata.issuer.includes('{tenantid}')) {
        config.timeout = REQUEST_TIMEOUT_SECONDS;
        client.enableNonRepudiationChecks(config);
        this.multiTenant = config;
      }
      this.lastError = undefined;
      this.onDiscovery(true);
      this.log.info(
        { issuer: this.metadata.issuer, tokenEndpointAuthMethod: this.clientAuth },
        'sign-in provider metadata loaded',
      );
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

/** RFC 8414 section 2: a provider that lists no method takes client_secret_basic. */
function advertisedMethods(metadata: client.ServerMetadata): string[] {
  return metadata.token_endpoint_auth_methods_supported ?? ['client_secret_basic'];
}

/**
 * The pinned method; else client_secret_post where it is advertised and either basic is not, or
 * form-encoding would change the credentials (openid-client encodes everything but letters and
 * digits, RFC 6749 2.3.1), which providers that do not decode Basic credentials then refuse.
 * Otherwise client_secret_basic, the default of OAuth 2.0.
 */
export function chooseClientAuth(metadata: client.ServerMetadata, settings: ProviderSettings): ClientAuthMethod {
  if (settings.tokenEndpointAuthMethod) return settings.tokenEndpointAuthMethod;
  const advertised = advertisedMethods(metadata);
  if (!advertised.includes('client_secret_post')) return 'client_secret_basic';
  const encodingChanges = /[^A-Za-z0-9]/.test(settings.clientId + settings.clientSecret);
  return !advertised.includes('client_secret_basic') || encodingChanges ? 'client_secret_post' : 'client_secret_basic';
}

function clientAuthOf(method: ClientAuthMethod, secret: string): client.ClientAuth {
  return method === 'client_secret_post' ? client.ClientSecretPost(secret) : client.ClientSecretBasic(secret);
}

/**
 * The token endpoint's "who are you?" (RFC 6749 5.2): `invalid_client`, the `unauthorized_client`
 * some providers answer instead, or a bare 401 challenge.
 */
export function isClientAuthRefusal(error: unknown): boolean {
  if (error instanceof client.ResponseBodyError) {
    return error.error === 'invalid_client' || error.error === 'unauthorized_client';
  }
  return error instanceof client.WWWAuthenticateChallengeError && error.status === 401;
}

/** The provider's error code and status, for the log: never a credential. */
function describeTokenError(error: unknown): Record<string, unknown> {
  if (error instanceof client.ResponseBodyError) return { code: error.error, status: error.status };
  return { status: (error as { status?: unknown }).status };
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
