/** Gatehouse configuration: defaults + the operator's edits + `${ENV}`, validated once at startup. */
export { loadConfig, loadConfigFromObject, loadDatabaseConfig, resolveConfigPath } from './load.js';
export { redactConfig } from './redact.js';
export {
  signInSettingsOf,
  type Config,
  type DatabaseConfig,
  type SignInProvider,
  type SignInSettings,
} from './schema.js';
