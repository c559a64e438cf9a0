/**
 * One small hierarchy for everything Gatehouse refuses or fails at. Each error carries a stable
 * `code` for logs and tests, and a message the reader can act on without the source.
 */
export class GatehouseError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The configuration file cannot be used; raised before anything listens. */
export class ConfigError extends GatehouseError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', message, options);
  }
}

/** A request failed in a way the HTTP caller should see, with its status. */
export class HttpError extends GatehouseError {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    code: string,
    message: string,
    options?: { cause?: unknown; headers?: Record<string, string> },
  ) {
    super(code, message, options);
    this.status = status;
    this.headers = options?.headers ?? {};
  }
}

/** The caller could not be identified (no, bad, expired or revoked credentials). */
export class AuthError extends HttpError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(401, code, message, { ...options, headers: { 'www-authenticate': 'Bearer' } });
  }
}

/** The caller is known but may not do this. */
export class ForbiddenError extends HttpError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(403, code, message, options);
  }
}

/** The account behind a key or a request in flight has been disabled. */
export function accountDisabled(): ForbiddenError {
  return new ForbiddenError('account_disabled', 'This account has been disabled by an administrator.');
}

/** The sign-in provider misbehaved or is unreachable. */
export class ProviderError extends GatehouseError {}

/** The platform behind the gateway could not be reached or broke off. */
export class UpstreamError extends HttpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(502, 'upstream_unavailable', message, options);
  }
}
