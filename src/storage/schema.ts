/** Times are milliseconds since the epoch in `bigint` columns, the same in SQLite and PostgreSQL. */
export interface UsersTable {
  id: string;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  created_at: number;
  last_login_at: number;
  /** 'admin' or 'user', recomputed from the provider's claims at each sign-in. */
  role: string;
  /** JSON array of the groups the provider named at the last sign-in. */
  groups: string;
  disabled_at: number | null;
  /** 'provider_refused' when a refresh was refused (a later sign-in enables the user again); else null. */
  disabled_reason: string | null;
}

/** A signed-in browser. Only a SHA-256 of the cookie value is stored, so a database copy signs no one in. */
export interface SessionsTable {
  id_hash: string;
  user_id: string;
  id_token: string | null;
  created_at: number;
  last_seen_at: number;
  expires_at: number;
  /** AES-256-GCM sealed (src/sessions/sealing.ts), never plaintext: a database copy must not be able to refresh. */
  refresh_token: string | null;
  /** Bumped by every refresh; updates conditional on it let one replica refresh while others re-read. */
  refresh_token_version: number;
  /** When a process claimed the refresh (or last failed to reach the provider); others keep off for a while. */
  refresh_claimed_at: number | null;
  /** The ID token's `exp` in ms; after a refresh that brought no ID token, when the grant is next checked. */
  id_token_expires_at: number | null;
  /** The ID token's `sid`, which back-channel logout tokens name (Back-Channel Logout 1.0 section 2.4). */
  sid: string | null;
}

/** A back-channel logout token already acted on, kept for as long as it could still be accepted. */
export interface UsedLogoutTokensTable {
  /** SHA-256 of the issuer and the token's `jti`. */
  jti_hash: string;
  expires_at: number;
}

/** One sign-in in progress: what the callback must see again (OpenID Connect Core 3.1.2.1, RFC 7636). */
export interface LoginFlowsTable {
  id_hash: string;
  state: string;
  nonce: string;
  code_verifier: string;
  return_to: string;
  expires_at: number;
  /** The id of the provider the sign-in was started with (`default` for the single auth_provider). */
  provider: string;
}

/** An API key. Only its HMAC is stored; the key itself exists once, in the answer that created it. */
export interface ApiKeysTable {
  id: string;
  user_id: string;
  /** Who created it, as the provider named them at that moment. */
  owner_subject: string;
  owner_email: string | null;
  name: string;
  hash: string;
  stub: string;
  created_at: number;
  expires_at: number | null;
  last_used_at: number | null;
  revoked_at: number | null;
  /** JSON list of scopes: inference, training, read, all, keys, admin. */
  scopes: string;
  /** JSON list of allowed models, or null for any. */
  models: string | null;
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
  /** The key a rotation made to replace this one. */
  replaced_by: string | null;
}

/** What happened, who did it, to what, from where. Never a secret. */
export interface AuditEventsTable {
  id: string;
  at: number;
  event: string;
  actor_user_id: string | null;
  actor_email: string | null;
  target: string | null;
  client_address: string | null;
  user_agent: string | null;
  /** JSON object with event-specific details (a reason, a key name). */
  detail: string;
}

/** Per day, user and key (or "session"): what went through, summed by every gateway process. */
export interface UsageDailyTable {
  day: string;
  user_id: string;
  key_id: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  status_2xx: number;
  status_4xx: number;
  status_5xx: number;
  latency_ms_total: number;
  /** Millionths of budgets.currency, at the price in force when each request ran. */
  cost_micros: number;
}

/** An administrator's budget for one user, replacing the configured ones (src/budgets/store.ts). */
export interface BudgetOverridesTable {
  user_id: string;
  tokens: number | null;
  /** Millionths of budgets.currency. */
  spend_micros: number | null;
  period: string;
  set_by: string | null;
  set_at: number;
}

/** A key's own budget, set at creation and capped by its owner's (src/budgets/store.ts). */
export interface KeyBudgetsTable {
  key_id: string;
  user_id: string;
  tokens: number | null;
  spend_micros: number | null;
  period: string;
}

/** What one budget subject ("user:ID", "key:ID") used in one period window ("2026-12"). */
export interface BudgetCountersTable {
  counter: string;
  tokens: number;
  micros: number;
  /** The window's end: past it the row is history, kept for the account page's totals only. */
  ends_at: number;
}

/** A replica's lease of room on a budget counter (`id` is the replica's holder id), held until renewed or, when the replica died, until it expires. */
export interface BudgetReservationsTable {
  id: string;
  counter: string;
  tokens: number;
  micros: number;
  expires_at: number;
}

/** A device sign-in in progress (RFC 8628). Both codes are stored as SHA-256 only, so a database copy approves nothing. */
export interface DeviceAuthorizationsTable {
  device_code_hash: string;
  user_code_hash: string;
  /** The `client_id` the program sent, shown to the person who approves. */
  client_id: string;
  /** The host name the program sent, if any. */
  device_name: string | null;
  /** JSON list of the scopes asked for. */
  scopes: string;
  /** The address the code was asked from. */
  client_address: string;
  created_at: number;
  expires_at: number;
  /** Grows by 5 s at each slow_down (RFC 8628 3.5). */
  interval_seconds: number;
  last_polled_at: number | null;
  /** pending, approved, denied or delivered. */
  status: string;
  /** Who approved or denied. */
  user_id: string | null;
  key_id: string | null;
  /** The new key, sealed (sessions/sealing.ts) until the program collects it once. */
  sealed_key: string | null;
}

/**
 * A user as the provider pushed it over SCIM (RFC 7643 section 4.1); `user_id` links it to the
 * Gatehouse user it was matched to, at creation or at that person's first sign-in (src/scim/link.ts).
 */
export interface ScimUsersTable {
  id: string;
  user_id: string | null;
  user_name: string;
  /** userName is not case-exact (RFC 7643 4.1.1): uniqueness and filters use this. */
  user_name_lower: string;
  external_id: string | null;
  /** 1 or 0. */
  active: number;
  /** JSON of every attribute as last written, but id and meta. */
  resource: string;
  created_at: number;
  updated_at: number;
  version: number;
}

/** A group as the provider pushed it over SCIM (RFC 7643 section 4.2). */
export interface ScimGroupsTable {
  id: string;
  display_name: string;
  external_id: string | null;
  created_at: number;
  updated_at: number;
  version: number;
}

export interface ScimMembersTable {
  group_id: string;
  scim_user_id: string;
}

export interface Database {
  users: UsersTable;
  sessions: SessionsTable;
  login_flows: LoginFlowsTable;
  api_keys: ApiKeysTable;
  audit_events: AuditEventsTable;
  used_logout_tokens: UsedLogoutTokensTable;
  usage_daily: UsageDailyTable;
  device_authorizations: DeviceAuthorizationsTable;
  scim_users: ScimUsersTable;
  scim_groups: ScimGroupsTable;
  scim_members: ScimMembersTable;
  budget_overrides: BudgetOverridesTable;
  key_budgets: KeyBudgetsTable;
  budget_counters: BudgetCountersTable;
  budget_reservations: BudgetReservationsTable;
}
