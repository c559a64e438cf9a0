import type { Identity } from '../identity/identify.js';
import { createInfoWriter, type Logger } from '../log.js';
import type { TokenUsage } from '../usage/extract.js';

/** What one finished request leaves in the access log; both HTTP stacks fill it in. */
export interface AccessFacts {
  method: string;
  /** The request target as received: its query is cut off here, since one may carry `?api_key=`. */
  url: string;
  status: number;
  durationMs: number;
  requestId: string;
  clientAddress: string;
  identity?: Identity;
  /** The body's `model`, when the body was read. */
  model?: string;
  /** Tokens the platform reported, when it did. */
  tokens?: TokenUsage;
}

/** Longer paths and model names are cut: a client must not be able to make every log line 16 KB long. */
const MAX_PATH_LENGTH = 200;

export type LogAccess = (facts: AccessFacts) => void;

/**
 * Writes one `info` line per finished request. Only named facts go in, never a header, cookie,
 * key or query string, so no credential can reach the log whatever the client sent; that is why
 * the line is built here without the redaction pass and object walk of the other log lines, which
 * made it the largest cost of Gatehouse's own code on a proxied request (bench/README.md).
 */
export function createAccessLog(log: Logger): LogAccess {
  const writeInfo = createInfoWriter(log);
  return (facts) => {
    const { identity, tokens, model } = facts;
    const queryAt = facts.url.indexOf('?');
    const path = queryAt === -1 ? facts.url : facts.url.slice(0, queryAt);
    let members =
      `,"reqId":${JSON.stringify(facts.requestId)},"method":${JSON.stringify(facts.method)}` +
      `,"path":${JSON.stringify(path.length > MAX_PATH_LENGTH ? path.slice(0, MAX_PATH_LENGTH) : path)}` +
      `,"status":${facts.status},"durationMs":${Math.round(facts.durationMs * 10) / 10}` +
      `,"client":${JSON.stringify(facts.clientAddress)}`;
    if (identity) {
      members += `,"sub":${JSON.stringify(identity.user.subject)}`;
      if (identity.key) members += `,"keyId":${JSON.stringify(identity.key.id)}`;
    }
    if (model !== undefined) members += `,"model":${JSON.stringify(model.slice(0, MAX_PATH_LENGTH))}`;
    if (tokens) members += `,"promptTokens":${tokens.prompt_tokens},"completionTokens":${tokens.completion_tokens}`;
    writeInfo(members, 'request');
  };
}
