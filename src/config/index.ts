/** Gatehouse configuration: defaults + the operator's edits + `${ENV}`, validated once at startup. */
export { loadConfig, loadConfigFromObject, loadDatabaseConfig, resolveConfigPath } from './load.js';
export { redactConfig } from './redact.js';
export type { Config, DatabaseConfig } from './schema.js';
