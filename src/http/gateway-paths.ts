import { ACCOUNT_SCRIPT_PATH, STYLESHEET_PATH } from '../web/pages.js';

const AUTH_PREFIX = '/v1/auth/';
/** SCIM provisioning (src/routes/scim.ts), the gateway's while `scim.enabled`. */
const SCIM_ROOT = '/scim/v2';
const HEALTH_PATHS = new Set(['/healthz', '/readyz']);
const ASSET_PATHS = new Set([STYLESHEET_PATH, ACCOUNT_SCRIPT_PATH]);

/**
 * Whether a request target is one of Gatehouse's own paths rather than the platform's: health, and
 * everything under /v1/auth/ while sign-in is on (with sign-in off that prefix is the platform's,
 * but for the stylesheet and script of the gateway's pages).
 */
export function gatewayPaths(signInEnabled: boolean, scimEnabled = false): (target: string | undefined) => boolean {
  return (target = '') => {
    const queryAt = target.indexOf('?');
    const path = queryAt === -1 ? target : target.slice(0, queryAt);
    if (scimEnabled && signInEnabled && (path === SCIM_ROOT || path.startsWith(`${SCIM_ROOT}/`))) return true;
    return HEALTH_PATHS.has(path) || (signInEnabled ? path.startsWith(AUTH_PREFIX) : ASSET_PATHS.has(path));
  };
}
