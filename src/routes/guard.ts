import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GatehouseError } from '../errors.js';
import { sendChallenge } from '../http/challenge.js';
import type { Identity } from '../identity/identify.js';
import type { Decide, Need } from '../policy/decide.js';

/**
 * Registers routes in an encapsulated Fastify plugin whose every request first asks `decide` for
 * `need` ("signed in", "keys", "admin"): a refusal is answered before the route runs, so no route
 * decides on its own. It runs on `onRequest`, before the body is read, so a caller who may not use
 * a route cannot make the gateway parse a body for it.
 */
export function registerGuarded(
  app: FastifyInstance,
  decide: Decide,
  need: Exclude<Need, 'platform'>,
  routes: (scope: FastifyInstance) => void,
): void {
  void app.register(async (scope) => {
    scope.addHook('onRequest', async (request, reply) => {
      const decision = await decide({ credentials: request, method: request.method, target: request.url, need });
      if (decision.outcome === 'challenge') return sendChallenge(request, reply);
      if (decision.outcome === 'deny') throw decision.error;
    });
    routes(scope);
  });
}

/** The caller a guarded route was let in for. */
export function callerOf(request: FastifyRequest): Identity {
  if (!request.identity) {
    throw new GatehouseError('UNGUARDED_ROUTE', `${request.routeOptions.url} was registered outside registerGuarded`);
  }
  return request.identity;
}
