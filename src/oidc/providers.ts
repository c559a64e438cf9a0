import type { SignInProvider } from '../config/index.js';
import type { ReadinessCheck } from '../http/health.js';
import type { Logger } from '../log.js';
import type { SignInRules } from '../policy/sign-in.js';
import type { RefreshOutcome, TokenRefresher } from '../sessions/store.js';
import { ProviderConnection } from './provider.js';
import { createTokenRefresher, type SignInRecheck } from './refresh.js';

/** The callback of the single `auth_provider`; each of `auth_providers` has `/v1/auth/auth/<id>`. */
export const CALLBACK_PATH = '/v1/auth/auth';

/** One provider people can sign in with, connected, with the rules its sign-ins pass. */
export interface ConnectedProvider {
  id: string;
  name: string;
  /** Where the provider sends the browser back; registered at the provider as the redirect URI. */
  callbackPath: string;
  connection: ProviderConnection;
  clientId: string;
  scopes: string[];
  /** `end_session_url`, for providers whose sign-out is not in discovery (Cognito). */
  endSessionUrl?: string;
  signInRules: SignInRules;
  /** Refuse a sign-in whose provider shares no email (`require_email`). */
  requireEmail: boolean;
}

export function callbackPathOf(provider: Pick<SignInProvider, 'id' | 'shorthand'>): string {
  return provider.shorthand ? CALLBACK_PATH : `${CALLBACK_PATH}/${provider.id}`;
}

/** Entra ID's tenant ids, the only values openid-client puts in place of `{tenantid}` (the `tid` claim). */
const TENANT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Whether `actual` is the issuer a provider's metadata names. Entra ID's multi-tenant metadata
 * names `https://login.microsoftonline.com/{tenantid}/v2.0`, and each token the issuer of the
 * person's own tenant: openid-client checks an ID token's `iss` against the template with its
 * `tid` claim put in; where no `tid` comes along (a front-channel logout's `iss`), any tenant id
 * in its place matches, and nothing else does.
 */
export function issuerMatches(expected: string, actual: string): boolean {
  const at = expected.indexOf('{tenantid}');
  if (at === -1) return expected === actual;
  const before = expected.slice(0, at);
  const after = expected.slice(at + '{tenantid}'.length);
  if (!actual.startsWith(before) || !actual.endsWith(after) || actual.length < before.length + after.length) {
    return false;
  }
  return TENANT_ID.test(actual.slice(before.length, actual.length - after.length));
}

/**
 * The providers people sign in with, each discovered and re-read on its own. A user belongs to
 * the provider whose issuer names them (users are keyed by issuer and subject), so refreshes,
 * sign-outs and logout notices each find their provider by issuer.
 */
export class SignInProviders {
  readonly all: readonly ConnectedProvider[];

  constructor(providers: readonly SignInProvider[], log: Logger, onDiscovery: (ok: boolean) => void) {
    this.all = providers.map((provider, index) => ({
      id: provider.id,
      name: provider.name,
      callbackPath: callbackPathOf(provider),
      connection: new ProviderConnection(
        {
          metadataUrl: provider.server_metadata_url,
          clientId: provider.client_id,
          clientSecret: provider.client_secret,
          allowHttp: provider.server_metadata_url.startsWith('http:') || provider.allow_insecure_http,
          tokenEndpointAuthMethod: provider.token_endpoint_auth_method,
          configKey: provider.shorthand ? 'auth_provider' : `auth_providers[${index}]`,
        },
        providers.length > 1 ? log.child({ provider: provider.id }) : log,
        onDiscovery,
      ),
      clientId: provider.client_id,
      scopes: provider.scopes,
      ...(provider.end_session_url ? { endSessionUrl: provider.end_session_url } : {}),
      signInRules: {
        allowedDomains: provider.allowed_email_domains,
        allowUnverified: provider.allow_unverified_email,
        workspaceDomain: provider.google_workspace_domain,
        allowedGroups: provider.allowed_groups,
        adminEmails: provider.admin_emails,
        adminGroups: provider.admin_groups,
        groupsClaim: provider.groups_claim,
      },
      requireEmail: provider.require_email,
    }));
  }

  get(id: string): ConnectedProvider | undefined {
    return this.all.find((provider) => provider.id === id);
  }

  /** The provider whose discovered issuer is `issuer`; undefined while it is not discovered. */
  byIssuer(issuer: string): ConnectedProvider | undefined {
    return this.all.find((provider) => {
      const expected = provider.connection.issuer;
      return expected !== undefined && issuerMatches(expected, issuer);
    });
  }

  /**
   * The display name of the provider `user` signs in with, for the admin console; the issuer where
   * no configured provider names it (one removed from the configuration, the static test token).
   */
  nameFor(user: { issuer: string }): string {
    return this.byIssuer(user.issuer)?.name ?? user.issuer;
  }

  /** Why some provider is not ready, each named by id when there are several; for /readyz. */
  get problem(): string | undefined {
    const problems = this.all
      .filter((provider) => provider.connection.problem !== undefined)
      .map((provider) =>
        this.all.length > 1 ? `${provider.id}: ${provider.connection.problem}` : provider.connection.problem,
      );
    return problems.length > 0 ? problems.join('; ') : undefined;
  }

  /**
   * `/readyz` checks: `provider` fails while no provider can sign anyone in; with several, each is
   * also reported as `provider <id>`, optional: one provider down must not take the gateway out of
   * service for everyone else, the other providers' users and every API key.
   */
  readinessChecks(): ReadinessCheck[] {
    if (this.all.length === 1) return [{ name: 'provider', check: async () => this.problem }];
    return [
      {
        name: 'provider',
        check: async () => (this.all.some((provider) => provider.connection.ready) ? undefined : this.problem),
      },
      ...this.all.map((provider) => ({
        name: `provider ${provider.id}`,
        check: async () => provider.connection.problem,
        optional: true,
      })),
    ];
  }

  get allReady(): boolean {
    return this.all.every((provider) => provider.connection.ready);
  }

  whenAttempted(): Promise<void> {
    return Promise.all(this.all.map((provider) => provider.connection.whenAttempted())).then(() => undefined);
  }

  close(): void {
    for (const provider of this.all) provider.connection.close();
  }
}

/**
 * Refreshes each session at the provider its user signed in with, under that provider's rules. A
 * user whose issuer no configured provider names (the provider was removed from the
 * configuration) cannot be refreshed: refused, once every provider is known; until then unavailable.
 */
export function createProvidersRefresher(
  providers: SignInProviders,
  log: Logger,
  recheck: Omit<SignInRecheck, 'rules'>,
): TokenRefresher {
  const refreshers = new Map(
    providers.all.map((provider) => [
      provider.id,
      createTokenRefresher(provider.connection, log, { ...recheck, rules: provider.signInRules }),
    ]),
  );
  return {
    async refresh(refreshToken, user): Promise<RefreshOutcome> {
      const provider = providers.byIssuer(user.issuer);
      if (provider) return refreshers.get(provider.id)!.refresh(refreshToken, user);
      if (!providers.allReady) return { result: 'unavailable' };
      log.warn({ userId: user.id }, 'no configured sign-in provider issued this user; the session ends');
      return { result: 'refused' };
    },
  };
}
