import { describe, expect, it } from 'vitest';
import { buildUpstreamHeaders } from '../../src/proxy/headers.js';

const context = { clientAddress: '127.0.0.1', publicProto: 'https', publicHost: 'llm.example.com', requestId: 'r1' };
const rules = { gatewayCookies: ['gatehouse_session'] };

describe('buildUpstreamHeaders', () => {
  it('still strips spoofed identity headers after a client has sent thousands of invented header names', () => {
    // Verdicts are remembered per header name up to a bound; names past it must be judged afresh.
    for (let index = 0; index < 2_000; index += 1) {
      const incoming = { [`x-invented-${index}`]: 'v', [`x-forwarded-user-${index}`]: 'mallory' };
      const headers = buildUpstreamHeaders(incoming, context, rules);
      expect(headers[`x-invented-${index}`]).toBe('v');
      expect(headers[`x-forwarded-user-${index}`]).toBeUndefined();
    }
    const late = buildUpstreamHeaders(
      { 'x-forwarded-user': 'mallory', x_forwarded_email: 'm@evil.test', 'x-remote-user': 'mallory', accept: '*/*' },
      { ...context, identity: { user: 'ada' } },
      rules,
    );
    expect(late).toMatchObject({ 'x-forwarded-user': 'ada', accept: '*/*' });
    expect(late).not.toHaveProperty('x_forwarded_email');
    expect(late).not.toHaveProperty('x-remote-user');
  });

  it('drops the headers the client lists in Connection, but never the gateway identity headers', () => {
    const headers = buildUpstreamHeaders(
      { connection: 'keep-alive, X-Secret-Hop, x-forwarded-user', 'x-secret-hop': '1', 'keep-alive': 'timeout=5' },
      { ...context, identity: { user: 'ada' } },
      rules,
    );
    expect(headers).not.toHaveProperty('x-secret-hop');
    expect(headers).not.toHaveProperty('keep-alive');
    expect(headers).not.toHaveProperty('connection');
    expect(headers['x-forwarded-user']).toBe('ada');
  });
});
