import { maskUrlPassword } from './describe.js';
import { PROVIDER_SECRET_KEYS, SECRET_KEYS, URLS_WITH_PASSWORD, type Config } from './schema.js';

/**
 * A plain copy of the configuration safe to print (`gatehouse config check`): secrets become
 * "***", and URL passwords too. Unset secrets stay unset, so the output still shows which are set.
 */
export function redactConfig(config: Config): unknown {
  const copy = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
  for (const path of SECRET_KEYS) {
    const [section = '', key = ''] = path.split('.');
    if (copy[section]?.[key] !== undefined) copy[section][key] = '***';
  }
  // With a list of providers, auth_provider holds only its defaults, which each item starts from.
  if (copy.auth_providers !== undefined) delete copy.auth_provider;
  for (const provider of (copy.auth_providers ?? []) as unknown as Array<Record<string, unknown>>) {
    for (const key of PROVIDER_SECRET_KEYS) if (provider[key] !== undefined) provider[key] = '***';
  }
  for (const path of URLS_WITH_PASSWORD) {
    const [section = '', key = ''] = path.split('.');
    const url = copy[section]?.[key];
    if (typeof url === 'string') copy[section]![key] = maskUrlPassword(url);
  }
  return copy;
}
