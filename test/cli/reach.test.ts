/**
 * What `gatehouse doctor` says when a server cannot be reached: the system or TLS error under
 * "fetch failed", with the address, from real connections on 127.0.0.1.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addressOf, describeReachFailure } from '../../src/commands/reach.js';
import { freePort } from '../support/ports.js';

let plain: Server;
let plainPort: number;

beforeAll(async () => {
  plain = createServer((_request, response) => response.end('plain http'));
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  plainPort = (plain.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => plain.close(() => resolve())));

async function failureOf(url: string): Promise<unknown> {
  try {
    await fetch(url);
  } catch (error) {
    return error;
  }
  throw new Error(`${url} answered`);
}

describe('describeReachFailure', () => {
  it('names ECONNREFUSED and the address where nothing listens, not "fetch failed"', async () => {
    const url = `http://127.0.0.1:${await freePort()}/v1/models`;
    const error = await failureOf(url);
    expect((error as Error).message).toBe('fetch failed');
    const described = describeReachFailure(error, addressOf(url));
    expect(described.cause).toBe(`nothing listens at ${new URL(url).host} (ECONNREFUSED)`);
    expect(described.fix).toMatch(/start it, or correct the host and port/);
  });

  it('names a TLS failure when https meets a plain http port, and suggests http://', async () => {
    const url = `https://127.0.0.1:${plainPort}/.well-known/openid-configuration`;
    const described = describeReachFailure(await failureOf(url), addressOf(url));
    expect(described.cause).toBe(`TLS with 127.0.0.1:${plainPort} failed (ERR_SSL_WRONG_VERSION_NUMBER)`);
    expect(described.fix).toContain('http://');
  });

  it('names a host that does not resolve', () => {
    const error = new TypeError('fetch failed', {
      cause: Object.assign(new Error('getaddrinfo ENOTFOUND idp.invalid'), { code: 'ENOTFOUND' }),
    });
    expect(describeReachFailure(error, 'idp.invalid:443').cause).toBe(
      'the host name of idp.invalid:443 does not resolve (ENOTFOUND)',
    );
  });
});

describe('addressOf', () => {
  it("spells out each scheme's default port and never the password", () => {
    expect(addressOf('https://idp.example.com/x')).toBe('idp.example.com:443');
    expect(addressOf('http://vllm:8000')).toBe('vllm:8000');
    expect(addressOf('redis://:secret@cache')).toBe('cache:6379');
    expect(addressOf('postgres://user:secret@db/gatehouse')).toBe('db:5432');
  });
});
