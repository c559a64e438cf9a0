import type { CookieSerializeOptions } from '@fastify/cookie';

export interface CookieNames {
  session: string;
  loginFlow: string;
}

/**
 * On https the `__Host-` prefix makes browsers refuse the cookie unless it is Secure, host-only and
 * Path=/, so a sibling subdomain cannot plant or shadow it (RFC 6265bis 4.1.3.2).
 */
export function cookieNamesFor(secure: boolean): CookieNames {
  const prefix = secure ? '__Host-' : '';
  return { session: `${prefix}gatehouse_session`, loginFlow: `${prefix}gatehouse_login` };
}

export function cookieOptions(secure: boolean, maxAgeSeconds?: number): CookieSerializeOptions {
  return { httpOnly: true, sameSite: 'lax', path: '/', secure, ...(maxAgeSeconds ? { maxAge: maxAgeSeconds } : {}) };
}
