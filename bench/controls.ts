/**
 * What the per-key controls cost on the hot path: the same API-key request with no controls, and
 * with scopes, a model allow-list (the body is then read and checked), and request, token and
 * per-user limits that are never reached. Run: npm run bench:controls. Target: ≤ 10 % loss.
 */
import { measureRows, printRows } from './lib/gateway-rows.js';

const results = await measureRows([
  { label: 'no controls', config: {} },
  {
    label: 'scopes + models + limits',
    config: { auth: { user_requests_per_minute: 100_000_000, user_tokens_per_minute: 1_000_000_000 } },
    keyArgs: [
      '--scopes',
      'inference',
      '--models',
      'demo-small',
      '--requests-per-minute',
      '100000000',
      '--tokens-per-minute',
      '1000000000',
    ],
  },
]);
printRows('Key controls on the hot path', results);
