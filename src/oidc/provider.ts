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
  /** Where these settings are in the configuration, for messages: `auth_provider` unless said. */
  configKey?: string;
}

const WELL_KNOWN = '/.well-known/openid-configuration';
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;
/** Each request to the provider (discovery, token, UserInfo) gives up after this long. */
export const REQUEST_TIMEOUT_SECONDS = 10;
/** A provider's `no-cache` or tiny max-age does not make every sign-in fetch discovery again. */
export const MIN_METADATA_LIFETIME_MS = 5 * 60_000;
/** Discovery and the JWKS are read again at least daily, whatever the caching headers say. */
export const MAX_METADATA_LIFETIME_MS = 24 * 3_600_000;
/** An ID token with an unexpected `alg` or `kid` makes discovery be read again, at most this often. */
export const MIN_ON_DEMAND_INTERVAL_MS = 60_000;

/**
 * The sign-in provider as this process knows it: discovered at start with retries and backoff,
 * so a provider that is down makes Gatehouse "not ready" instead of crashing it. Discovery (and
 * with it the JWKS) is read again when its caching headers say it is stale (at least daily), and
 * at once when an ID token arrives with an `alg` or `kid` it does not allow: a provider that
 * switches algorithm or key set needs no restart. Until a re-read succeeds, the last good
 * metadata stays in use.
 */
export class ProviderConnection {
  private metadata: client.ServerMetadata | undefined;
  /** Set for multi-tenant issuers (Entra ID's `{tenantid}`), which only discovery can configure. */
  private multiTenant: client.Configuration | undefined;
  private jwksCache: client.ExportedJWKSCache | undefined;
  private lastError: Error | undefined;
  /** How the client authenticates at the token endpoint; chosen at discovery, switched once if refused. */
  private clientAuth: ClientAuthMethod = 'client_secret_basic';
  private nextRead: NodeJS.Timeout | undefined;
  private lastOnDemandRefresh = 0;
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

  /** The discovered issuer (Entra's multi-tenant one with `{tenantid}` in it); undefined until discovered. */
  get issuer(): string | undefined {
    return this.metadata?.issuer;
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

  /** The client authentication token requests use now: chosen from discovery, or kept after a fallback. */
  get clientAuthMethod(): ClientAuthMethod {
    return this.clientAuth;
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
      if (isUnexpectedSigningKey(error)) await this.refreshAfterUnexpectedKey();
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
        `the sign-in provider accepts ${other}, not ${tried}; set ${this.settings.configKey ?? 'auth_provider'}.token_endpoint_auth_method: ${other} to use it from the start`,
      );
      return result;
    }
  }

  /**
   * The ID token just refused was signed in a way the metadata does not allow: the provider may
   * have changed it. The sign-in that met it fails ("try again"); the next one sees the new metadata.
   */
  private async refreshAfterUnexpectedKey(now = Date.now()): Promise<void> {
    if (now - this.lastOnDemandRefresh < MIN_ON_DEMAND_INTERVAL_MS) return;
    this.lastOnDemandRefresh = now;
    this.log.warn(
      'an ID token was signed with an algorithm or key the provider metadata does not list; reading it again',
    );
    clearTimeout(this.nextRead);
    await this.discover(FIRST_RETRY_MS);
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
    clearTimeout(this.nextRead);
  }

  private async discover(nextDelayMs: number): Promise<void> {
    let headers: Headers | undefined;
    try {
      const config = await client.discovery(
        issuerUrlOf(this.settings.metadataUrl),
        this.settings.clientId,
        this.settings.clientSecret,
        // Read at each request, so the Entra configuration reused as is follows a switch too.
        (as, ...rest) => clientAuthOf(this.clientAuth, this.settings.clientSecret)(as, ...rest),
        {
          execute: this.settings.allowHttp ? [client.allowInsecureRequests] : [],
          timeout: REQUEST_TIMEOUT_SECONDS,
          // The discovery document's caching headers say when to read it again.
          [client.customFetch]: async (url, options) => {
            const response = await fetch(url, options);
            headers ??= response.headers;
            return response;
          },
        },
      );
      const metadata = config.serverMetadata();
      // A method found by retrying stays while the provider still advertises it.
      if (!this.metadata || !advertisedMethods(metadata).includes(this.clientAuth)) {
        this.clientAuth = chooseClientAuth(metadata, this.settings);
      }
      this.metadata = metadata;
      // The keys are read again too: the next sign-in fetches the JWKS the new metadata names.
      this.jwksCache = undefined;
      this.multiTenant = undefined;
      if (this.metadata.issuer.includes('{tenantid}')) {
        config.timeout = REQUEST_TIMEOUT_SECONDS;
        client.enableNonRepudiationChecks(config);
        this.multiTenant = config;
      }
      this.lastError = undefined;
      this.onDiscovery(true);
      const lifetimeMs = metadataLifetimeMs(headers);
      this.log.info(
        { issuer: this.metadata.issuer, tokenEndpointAuthMethod: this.clientAuth, nextReadInMs: lifetimeMs },
        'sign-in provider metadata loaded',
      );
      this.schedule(() => this.discover(FIRST_RETRY_MS), lifetimeMs);
    } catch (error) {
      this.lastError = describeDiscoveryError(this.settings.metadataUrl, error);
      this.onDiscovery(false);
      this.log.warn(
        { err: this.lastError, retryInMs: nextDelayMs, keepsPreviousMetadata: this.metadata !== undefined },
        'sign-in provider discovery failed',
      );
      this.schedule(() => this.discover(Math.min(nextDelayMs * 2, MAX_RETRY_MS)), nextDelayMs);
    }
  }

  private schedule(next: () => Promise<void>, delayMs: number): void {
    if (this.closed) return;
    clearTimeout(this.nextRead);
    this.nextRead = setTimeout(() => void next(), delayMs);
    this.nextRead.unref();
  }
}

/**
 * How long a discovery document may be used, from its `Cache-Control` max-age (or `Expires`),
 * bounded to [5 minutes, 1 day]; a day when it says nothing.
 */
export function metadataLifetimeMs(headers: Headers | undefined, now = Date.now()): number {
  const cacheControl = headers?.get('cache-control') ?? '';
  const maxAge = /(?:^|[,\s])max-age=(\d+)/i.exec(cacheControl)?.[1];
  const expires = Date.parse(headers?.get('expires') ?? '');
  let lifetime = MAX_METADATA_LIFETIME_MS;
  if (/no-cache|no-store/i.test(cacheControl)) lifetime = MIN_METADATA_LIFETIME_MS;
  else if (maxAge !== undefined) lifetime = Number(maxAge) * 1000;
  else if (!Number.isNaN(expires)) lifetime = expires - now;
  return Math.min(Math.max(lifetime, MIN_METADATA_LIFETIME_MS), MAX_METADATA_LIFETIME_MS);
}

/** openid-client's refusals of an ID token whose `alg` the metadata does not list, or whose `kid` the JWKS lacks. */
function isUnexpectedSigningKey(error: unknown): boolean {
  for (let current = error; current instanceof Error; current = current.cause) {
    const { code, message } = current as Error & { code?: unknown };
    if (code === 'OAUTH_KEY_SELECTION_FAILED') return true;
    if (code === 'OAUTH_INVALID_RESPONSE' && message.includes('"alg"')) return true;
  }
  return false;
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
