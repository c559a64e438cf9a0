import type { SignInProvider } from '../../src/config/index.js';

/**
 * One provider's settings as signInSettingsOf resolves them (every sign-in rule open), for tests
 * that build SignInProviders without a configuration file.
 */
export function providerSettings(
  id: string,
  metadataUrl: string,
  changes: Partial<SignInProvider> = {},
): SignInProvider {
  return {
    id,
    name: id,
    shorthand: false,
    client_id: 'gatehouse',
    client_secret: 'secret-long-enough-for-the-demo',
    server_metadata_url: metadataUrl,
    scopes: ['openid'],
    allow_insecure_http: false,
    groups_claim: 'groups',
    allowed_email_domains: [],
    allow_unverified_email: false,
    require_email: false,
    allowed_groups: [],
    admin_emails: [],
    admin_groups: [],
    ...changes,
  };
}
