import type { FastifyInstance } from 'fastify';

export interface ReadinessCheck {
  name: string;
  /** Resolves with undefined when healthy, or a reason a person can act on. */
  check(): Promise<string | undefined>;
  /** Reported, but not a reason to be taken out of service (an accelerator such as Redis). */
  optional?: boolean;
}

/** `/healthz` says the process answers; `/readyz` says it can serve (dependencies reachable). */
export function registerHealthRoutes(app: FastifyInstance, checks: ReadinessCheck[], warnings: string[]): void {
  app.get('/healthz', async (_request, reply) => reply.header('cache-control', 'no-store').send({ status: 'ok' }));
  const optionalChecks = new Set(checks.filter((check) => check.optional).map((check) => check.name));
  app.get('/readyz', async (_request, reply) => {
    const results = await Promise.all(
      checks.map(async ({ name, check }) => [name, await check().catch((error: Error) => error.message)] as const),
    );
    const failing = results.filter(([name, problem]) => problem !== undefined && !optionalChecks.has(name));
    return reply
      .code(failing.length ? 503 : 200)
      .header('cache-control', 'no-store')
      .send({
        status: failing.length ? 'not_ready' : 'ready',
        checks: Object.fromEntries(results.map(([name, problem]) => [name, problem ?? 'ok'])),
        ...(warnings.length ? { warnings } : {}),
      });
  });
}
