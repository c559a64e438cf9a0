import { createRequire } from 'node:module';
import type { FastifyServerOptions } from 'fastify';

const require = createRequire(import.meta.url);

type Compiled = ((data: unknown) => unknown) & { errors?: unknown };
type Builder = (externalSchemas: unknown, options: unknown) => (route: object) => Compiled;

/**
 * Fastify loads Ajv and compiles every route schema before it listens: some 50 ms and more of a
 * start, for routes (key creation, admin forms) a person uses now and then. These compilers load
 * Fastify's own and compile a route's schema on the first request that needs it, with the same
 * options; the error list Fastify reads off a validator is passed on.
 */
function deferred(compilerModule: string): Builder {
  return (externalSchemas, options) => {
    let compilerFor: ((route: object) => Compiled) | undefined;
    return (route) => {
      let compiled: Compiled | undefined;
      const run: Compiled = (data) => {
        compilerFor ??= (require(compilerModule) as () => Builder)()(externalSchemas, options);
        compiled ??= compilerFor(route);
        const result = compiled(data);
        run.errors = compiled.errors;
        return result;
      };
      return run;
    };
  };
}

type CompilersFactory = NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>;

/** For Fastify's `schemaController.compilersFactory`; Fastify's types name Ajv's function, which this stands in for. */
export const deferredSchemaCompilers = {
  buildValidator: deferred('@fastify/ajv-compiler'),
  buildSerializer: deferred('@fastify/fast-json-stringify-compiler'),
} as unknown as CompilersFactory;
