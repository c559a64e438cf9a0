import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { OWNED_SECTIONS } from '../../src/config/tree.js';
import { cliNodeFlags } from '../support/cli.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const deployDir = join(root, 'deploy');

/** The few manifest fields these tests read; everything else is left unchecked by the type. */
interface Manifest {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    replicas?: number;
    /** A Service's selector is the label map itself; a Deployment's and a budget's nest it in matchLabels. */
    selector?: Record<string, unknown> & { matchLabels?: Record<string, string> };
    minAvailable?: number;
    template?: { metadata?: { labels?: Record<string, string> }; spec?: PodSpec };
    ports?: { port: number; targetPort?: number | string }[];
    tls?: { hosts?: string[]; secretName?: string }[];
    rules?: {
      host?: string;
      http?: { paths?: { path?: string; backend?: { service?: { name?: string; port?: { number?: number } } } }[] };
    }[];
  };
}

interface Probe {
  httpGet?: { path?: string; port?: number | string };
}

interface Container {
  name: string;
  image?: string;
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  envFrom?: { secretRef?: { name?: string } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] }; sleep?: { seconds?: number } } };
}

interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  volumes?: { name: string; configMap?: { name?: string }; emptyDir?: object }[];
}

interface Parsed {
  file: string;
  manifest: Manifest;
}

function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => /\.ya?ml$/.test(name))
    .map((name) => join(dir, name))
    .sort();
}

function parseManifests(): { documents: Parsed[]; errors: string[] } {
  const documents: Parsed[] = [];
  const errors: string[] = [];
  for (const path of yamlFilesUnder(deployDir)) {
    const file = relative(root, path).split('\\').join(posix.sep);
    for (const document of parseAllDocuments(readFileSync(path, 'utf8'))) {
      errors.push(...[...document.errors, ...document.warnings].map((problem) => `${file}: ${problem.message}`));
      const manifest = document.toJS() as Manifest | null;
      if (manifest !== null) documents.push({ file, manifest });
    }
  }
  return { documents, errors };
}

const { documents, errors: yamlErrors } = parseManifests();

function findOne(kind: string, name?: string): Manifest {
  const found = documents.filter(
    ({ manifest }) => manifest.kind === kind && (name === undefined || manifest.metadata?.name === name),
  );
  expect(
    found.map(({ file }) => file),
    `exactly one ${kind}${name ? ` ${name}` : ''}`,
  ).toHaveLength(1);
  return found[0]!.manifest;
}

function podSpecOf(manifest: Manifest): PodSpec {
  const spec = manifest.spec?.template?.spec;
  expect(spec, `${manifest.kind} ${manifest.metadata?.name} has a pod template`).toBeDefined();
  return spec!;
}

function onlyContainer(manifest: Manifest): Container {
  const { containers } = podSpecOf(manifest);
  expect(containers).toHaveLength(1);
  return containers[0]!;
}

/** A probe or Service port may name a container port instead of giving its number. */
function resolvePort(container: Container, port: number | string | undefined): number | undefined {
  if (typeof port !== 'string') return port;
  return container.ports?.find((candidate) => candidate.name === port)?.containerPort;
}

function mountPathOf(
  container: Container,
  pod: PodSpec,
  matches: (volume: NonNullable<PodSpec['volumes']>[number]) => boolean,
) {
  const volume = pod.volumes?.find(matches);
  return container.volumeMounts?.find((mount) => mount.name === volume?.name);
}

/** Dummy values that pass validation, for the variables the Secret provides. */
const DUMMY_VALUES: Record<string, string> = {
  GATEHOUSE_CLIENT_SECRET: 'dummy-client-secret',
  DATABASE_URL: 'postgres://gatehouse:dummy@postgres.example:5432/gatehouse',
  GATEHOUSE_KEY_HASH_SECRET: 'dummy-key-hash-secret-of-at-least-32-characters',
};

const defaultPort = (
  parse(readFileSync(join(root, 'config', 'llama_config.yaml'), 'utf8')) as { gateway: { port: number } }
).gateway.port;

/** Where the image keeps the code, and the one directory it writes to (its working directory). */
const APP_DIR = '/app';
const IMAGE_DATA_DIR = '/var/lib/gatehouse';
/** The least a `docker run` config holds: a provider and a platform, everything else the defaults. */
const MINIMAL_EDITS = {
  powerml: { website: 'https://llm.example.com' },
  auth_provider: {
    client_id: 'gatehouse',
    client_secret: 'a-client-secret',
    server_metadata_url: 'https://idp.example.com/.well-known/openid-configuration',
  },
  gateway: { upstream: 'http://host.docker.internal:8000' },
};

const deployment = () => findOne('Deployment', 'gatehouse');
const secret = () => findOne('Secret');
const configMap = () => findOne('ConfigMap');
const CONFIG_FILE = 'llama_config_edits.yaml';

/** The ConfigMap's config, loaded as Gatehouse loads it, with only the Secret's variables set. */
function loadManifestConfig() {
  const text = configMap().data?.[CONFIG_FILE];
  expect(text, `the ConfigMap holds ${CONFIG_FILE}`).toBeTypeOf('string');
  const edits: unknown = parse(text!);
  const env = Object.fromEntries(
    Object.keys(secret().stringData ?? {}).map((name) => [name, DUMMY_VALUES[name] ?? `dummy-${name.toLowerCase()}`]),
  );
  return { edits, config: loadConfigFromObject(edits, `ConfigMap ${CONFIG_FILE}`, env) };
}

interface Instruction {
  keyword: string;
  args: string;
}

/** The Dockerfile's instructions after the last FROM (the image that ships), continuations joined. */
function finalStageInstructions(): Instruction[] {
  const text = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\r?\n/g, ' ');
  const instructions = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [keyword = '', ...rest] = line.split(/\s+/);
      return { keyword: keyword.toUpperCase(), args: rest.join(' ') };
    });
  const lastFrom = instructions.map((instruction) => instruction.keyword).lastIndexOf('FROM');
  expect(lastFrom).toBeGreaterThanOrEqual(0);
  return instructions.slice(lastFrom);
}

describe('deploy/ manifests', () => {
  it('are all valid YAML, each document a Kubernetes object', () => {
    expect(yamlErrors).toEqual([]);
    expect(documents.length).toBeGreaterThan(0);
    for (const { file, manifest } of documents) {
      expect(manifest.apiVersion, file).toBeTypeOf('string');
      expect(manifest.kind, file).toBeTypeOf('string');
      expect(manifest.metadata?.name, file).toBeTypeOf('string');
      if (manifest.kind !== 'Namespace') expect(manifest.metadata?.namespace, file).toBe('gatehouse');
    }
    expect(findOne('Namespace').metadata?.name).toBe('gatehouse');
  });

  it('probe the gateway on its own port: /healthz for liveness, /readyz for readiness', () => {
    const container = onlyContainer(deployment());
    expect(resolvePort(container, 'http')).toBe(defaultPort);
    expect(loadManifestConfig().config.gateway.port).toBe(defaultPort);
    expect(container.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(container.readinessProbe?.httpGet?.path).toBe('/readyz');
    for (const probe of [container.livenessProbe, container.readinessProbe, container.startupProbe]) {
      if (probe) expect(resolvePort(container, probe.httpGet?.port)).toBe(defaultPort);
    }
  });

  it('run at least two replicas, kept through disruptions and given time to finish streams', () => {
    const spec = deployment().spec!;
    expect(spec.replicas).toBeGreaterThanOrEqual(2);
    expect(spec.selector?.matchLabels).toBeDefined();
    expect(spec.template?.metadata?.labels).toMatchObject(spec.selector!.matchLabels!);
    const budget = findOne('PodDisruptionBudget');
    expect(budget.spec?.minAvailable).toBeGreaterThanOrEqual(1);
    expect(budget.spec?.selector?.matchLabels).toEqual(spec.selector?.matchLabels);
  });

  it('outlast the preStop pause plus the shutdown grace Gatehouse gives open streams', () => {
    const { preStop } = onlyContainer(deployment()).lifecycle ?? {};
    const command = preStop?.exec?.command ?? [];
    const pause = preStop?.sleep?.seconds ?? (command[0] === 'sleep' ? Number(command[1]) : 0);
    // Read by name, so this compiles whether or not Config declares it yet; 30 s is its default.
    const gateway: Record<string, unknown> = loadManifestConfig().config.gateway;
    const grace = Number(gateway.shutdown_grace_seconds ?? 30);
    expect(podSpecOf(deployment()).terminationGracePeriodSeconds).toBeGreaterThan(pause + grace);
  });

  it('route the Service and the Ingress to the gateway port', () => {
    const container = onlyContainer(deployment());
    const service = findOne('Service', 'gatehouse');
    expect(service.spec?.selector).toEqual(deployment().spec?.selector?.matchLabels);
    const [servicePort, ...others] = service.spec?.ports ?? [];
    expect(others).toEqual([]);
    expect(resolvePort(container, servicePort?.targetPort)).toBe(defaultPort);

    const ingress = findOne('Ingress');
    const backends = (ingress.spec?.rules ?? []).flatMap((rule) => rule.http?.paths ?? []);
    expect(backends.length).toBeGreaterThan(0);
    for (const { backend } of backends) {
      expect(backend?.service?.name).toBe(service.metadata?.name);
      expect(backend?.service?.port?.number).toBe(servicePort?.port);
    }
  });

  it('serve the Ingress over TLS on the host of powerml.website, where the callback URL points', () => {
    const website = new URL(loadManifestConfig().config.powerml.website!);
    expect(website.protocol).toBe('https:');
    const ingress = findOne('Ingress');
    expect(ingress.spec?.rules?.map((rule) => rule.host)).toEqual([website.hostname]);
    expect(ingress.spec?.tls?.flatMap((tls) => tls.hosts ?? [])).toContain(website.hostname);
  });
});

describe('the ConfigMap configuration', () => {
  it("validates with Gatehouse's own loader, given only the variables the Secret provides", () => {
    expect(() => loadManifestConfig()).not.toThrow();
  });

  it('has only sections Gatehouse reads, since any other section is skipped without a word', () => {
    const { edits } = loadManifestConfig();
    expect(
      Object.keys(edits as object).filter((section) => !(OWNED_SECTIONS as readonly string[]).includes(section)),
    ).toEqual([]);
  });

  it('is what the replicas need to share: PostgreSQL, one key hash secret, a trusted ingress range', () => {
    const { config } = loadManifestConfig();
    expect(config.database.url).toMatch(/^postgres(ql)?:\/\//);
    expect(config.auth.key_hash_secret).toBe(DUMMY_VALUES.GATEHOUSE_KEY_HASH_SECRET);
    expect(config.gateway.trusted_proxies.length).toBeGreaterThan(0);
  });

  it('is mounted where the image looks for it, with the Secret in the environment', () => {
    const gatewayConfig = finalStageInstructions()
      .filter(({ keyword }) => keyword === 'ENV')
      .map(({ args }) => /GATEHOUSE_CONFIG=(\S+)/.exec(args)?.[1])
      .find((path) => path !== undefined);
    expect(gatewayConfig).toBe(`/etc/gatehouse/${CONFIG_FILE}`);
    for (const workload of [deployment(), findOne('Job', 'gatehouse-migrate')]) {
      const pod = podSpecOf(workload);
      const container = onlyContainer(workload);
      const mount = mountPathOf(container, pod, (volume) => volume.configMap?.name === configMap().metadata?.name);
      expect(mount && posix.join(mount.mountPath, CONFIG_FILE)).toBe(gatewayConfig);
      expect(container.envFrom?.map((source) => source.secretRef?.name)).toContain(secret().metadata?.name);
    }
  });
});

describe('the pods', () => {
  it('run as a non-root user with a read-only root filesystem', () => {
    for (const workload of [deployment(), findOne('Job', 'gatehouse-migrate')]) {
      const pod = podSpecOf(workload);
      const container = onlyContainer(workload);
      expect(pod.securityContext?.runAsNonRoot).toBe(true);
      // The image names its user (`node`); the kubelet can only check a numeric one.
      expect(pod.securityContext?.runAsUser).toBeGreaterThan(0);
      expect(container.securityContext?.readOnlyRootFilesystem).toBe(true);
      expect(container.securityContext?.allowPrivilegeEscalation).toBe(false);
      const tmp = mountPathOf(container, pod, (volume) => volume.emptyDir !== undefined && volume.name === 'tmp');
      expect(tmp?.mountPath).toBe('/tmp');
    }
  });

  it('can write to gateway.data_dir, the one directory Gatehouse writes to', () => {
    const pod = podSpecOf(deployment());
    const container = onlyContainer(deployment());
    const dataDir = loadManifestConfig().config.gateway.data_dir;
    const mount = container.volumeMounts?.find((candidate) => candidate.mountPath === dataDir);
    expect(mount, `a volume mounted at ${dataDir}`).toBeDefined();
    expect(mount?.readOnly).not.toBe(true);
    expect(pod.volumes?.find((volume) => volume.name === mount?.name)?.emptyDir).toBeDefined();
  });

  it('run the migration Job from the same image as the gateway', () => {
    const job = onlyContainer(findOne('Job', 'gatehouse-migrate'));
    expect(job.args).toEqual(['migrate']);
    expect(job.image).toBe(onlyContainer(deployment()).image);
    expect(onlyContainer(deployment()).args ?? ['serve']).toEqual(['serve']);
  });
});

describe('Dockerfile', () => {
  const final = finalStageInstructions();
  const argsOf = (keyword: string) => final.filter((instruction) => instruction.keyword === keyword).map((i) => i.args);

  it('exposes the gateway port and checks /healthz on it', () => {
    expect(argsOf('EXPOSE')).toEqual([String(defaultPort)]);
    const [healthcheck, ...others] = argsOf('HEALTHCHECK');
    expect(others).toEqual([]);
    expect(healthcheck).toContain(`127.0.0.1:${defaultPort}/healthz`);
  });

  it('runs the gateway as the non-root node user, with the Node flags the command line carries', () => {
    expect(argsOf('USER').at(-1)).toBe('node');
    const entrypoint = ['node', ...cliNodeFlags(), `${APP_DIR}/dist/cli.js`]
      .map((word) => JSON.stringify(word))
      .join(', ');
    expect(argsOf('ENTRYPOINT')).toEqual([`[${entrypoint}]`]);
    expect(argsOf('CMD')).toEqual(['["serve"]']);
  });

  it('keeps the default SQLite database and generated secrets in /var/lib/gatehouse, writable by node', () => {
    const workdir = argsOf('WORKDIR').at(-1)!;
    expect(workdir).toBe(IMAGE_DATA_DIR);
    // The defaults, as `docker run` with a config naming only the provider and the platform gets them.
    const config = loadConfigFromObject(MINIMAL_EDITS, 'docker run', {});
    expect(config.database.url).toMatch(/^sqlite:/);
    expect(posix.resolve(workdir, config.database.url.slice('sqlite:'.length))).toBe(`${IMAGE_DATA_DIR}/gatehouse.db`);
    expect(posix.resolve(workdir, config.gateway.data_dir).startsWith(`${IMAGE_DATA_DIR}/`)).toBe(true);
    const setup = argsOf('RUN').join(' ');
    expect(setup).toContain(`chown node:node ${IMAGE_DATA_DIR}`);
    // The code stays where the working directory is not: the process cannot change it.
    expect(argsOf('WORKDIR')).toContain(APP_DIR);
    expect(argsOf('COPY').every((args) => !args.includes('--chown'))).toBe(true);
  });

  it('npm start passes the same Node flags', () => {
    const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(scripts.start).toBe(['node', ...cliNodeFlags(), 'dist/cli.js', 'serve'].join(' '));
  });
});
