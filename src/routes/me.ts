import type { FastifyInstance } from 'fastify';
import type { Decide } from '../policy/decide.js';
import { callerOf, registerGuarded } from './guard.js';

export const ME_PATH = '/v1/auth/me';

/** "Who am I": the caller's subject, email and name, for a session or an API key alike. */
export function registerMeRoute(app: FastifyInstance, decide: Decide): void {
  registerGuarded(app, decide, 'signed_in', (scope) => {
    scope.get(ME_PATH, async (request, reply) => {
      const { subject, email, name } = callerOf(request).user;
      return reply.header('cache-control', 'no-store').send({ sub: subject, email, name });
    });
  });
}
