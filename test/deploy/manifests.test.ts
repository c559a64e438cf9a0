/**
 * The deployment files agree with the image and with Gatehouse: the Kustomize overlays are rendered
 * with `kubectl kustomize` (as `kubectl apply -k` would) and each rendered config is loaded with
 * Gatehouse's own validation; ports, probes, mounts and the metrics port are checked against it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfigFromObject } from '../../src/config/index.js';
import { OWNED_SECTIONS } from '../../src/config/tree.js';
import { cliNodeFlags } from '../support/cli.js';
import { hasKubectl, requireResource } from '../support/requirements.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const kubernetesDir = join(root, 'deploy', 'kubernetes');

const kubectl = await requireResource(
  'kubectl',
  hasKubectl(),
  'Install kubectl (https://kubernetes.io/docs/tasks/tools/): it renders the Kustomize overlays under deploy/kubernetes/.',
);

/** The few manifest fields these tests read; everything else is left unchecked by the type. */
interface Manifest {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    replicas?: number;
    strategy?: { type?: string };
    /** A Service's selector is the label map itself; a Deployment's and a budget's nest it in matchLabels. */
    selector?: Record<string, unknown> & { matchLabels?: Record<string, string> };
    minAvailable?: number;
    template?: { metadata?: { labels?: Record<string, string> }; spec?: PodSpec };
    ports?: { name?: string; port: number; targetPort?: number | string }[];
    tls?: { hosts?: string[]; secretName?: string }[];
    rules?: {
      host?: string;
      http?: { paths?: { path?: string; backend?: { service?: { name?: string; port?: { number?: number } } } }[] };
    }[];
    endpoints?: { port?: string; path?: string }[];
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

type Volume = {
  name: string;
  configMap?: { name?: string };
  emptyDir?: object;
  persistentVolumeClaim?: { claimName?: string };
};

interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  volumes?: Volume[];
}

function parseDocuments(text: string, source: string): Manifest[] {
  return parseAllDocuments(text).flatMap((document) => {
    expect([...document.errors, ...document.warnings].map((problem) => `${source}: ${problem.message}`)).toEqual([]);
    const manifest = document.toJS() as Manifest | null;
    return manifest === null ? [] : [manifest];
  });
}

/** `kubectl kustomize DIR`: the objects `kubectl apply -k DIR` would send. */
function render(dir: string): Manifest[] {
  return parseDocuments(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' }), dir);
}

/** The objects of one deployment, looked up by kind and name. */
class Rendered {
  constructor(readonly manifests: Manifest[]) {}

  all(kind: string): Manifest[] {
    return this.manifests.filter((manifest) => manifest.kind === kind);
  }

  one(kind: string, name?: string): Manifest {
    const found = this.all(kind).filter((manifest) => name === undefined || manifest.metadata?.name === name);
    expect(found, `exactly one ${kind}${name ? ` ${name}` : ''}`).toHaveLength(1);
    return found[0]!;
  }

  get deployment(): Manifest {
    return this.one('Deployment', 'gatehouse');
  }

  get container(): Container {
    return onlyContainer(this.deployment);
  }

  /** The ConfigMap's config, loaded as Gatehouse loads it, with only the Secret's variables set. */
  loadConfig() {
    const text = this.one('ConfigMap').data?.[CONFIG_FILE];
    expect(text, `the ConfigMap holds ${CONFIG_FILE}`).toBeTypeOf('string');
    const edits: unknown = parse(text!);
    const env = Object.fromEntries(
      Object.keys(this.one('Secret').stringData ?? {}).map((name) => [
        name,
        DUMMY_VALUES[name] ?? `dummy-${name.toLowerCase()}`,
      ]),
    );
    return { edits, config: loadConfigFromObject(edits, `ConfigMap ${CONFIG_FILE}`, env) };
  }
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

function mountOf(container: Container, pod: PodSpec, matches: (volume: Volume) => boolean) {
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

const CONFIG_FILE = 'llama_config_edits.yaml';
const OVERLAYS = ['sqlite', 'postgres'] as const;
const rendered = Object.fromEntries(
  OVERLAYS.map((overlay) => [
    overlay,
    kubectl ? new Rendered(render(join(kubernetesDir, 'overlays', overlay))) : undefined,
  ]),
) as Record<(typeof OVERLAYS)[number], Rendered>;

const migrateJob = (): Manifest => {
  const [job, ...others] = parseDocuments(
    readFileSync(join(kubernetesDir, 'migrate', 'job.yaml'), 'utf8'),
    'migrate/job.yaml',
  );
  expect(others).toEqual([]);
  return job!;
};

describe.skipIf(!kubectl).each(OVERLAYS)('the %s overlay, rendered by kubectl kustomize', (overlay) => {
  const deployment = () => rendered[overlay];

  it('puts every object in the gatehouse namespace, which it creates', () => {
    const { manifests } = deployment();
    for (const manifest of manifests) {
      expect(manifest.metadata?.name, manifest.kind).toBeTypeOf('string');
      if (manifest.kind !== 'Namespace') expect(manifest.metadata?.namespace, manifest.kind).toBe('gatehouse');
    }
    expect(deployment().one('Namespace').metadata?.name).toBe('gatehouse');
  });

  it("carries a config that validates with Gatehouse's own loader, given only the Secret's variables", () => {
    const { edits } = deployment().loadConfig();
    // Any other section would be skipped without a word.
    expect(
      Object.keys(edits as object).filter((section) => !(OWNED_SECTIONS as readonly string[]).includes(section)),
    ).toEqual([]);
  });

  it('probes the gateway on its own port: /healthz for liveness, /readyz for readiness', () => {
    const { container } = deployment();
    expect(resolvePort(container, 'http')).toBe(defaultPort);
    expect(deployment().loadConfig().config.gateway.port).toBe(defaultPort);
    expect(container.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(container.readinessProbe?.httpGet?.path).toBe('/readyz');
    for (const probe of [container.livenessProbe, container.readinessProbe, container.startupProbe]) {
      if (probe) expect(resolvePort(container, probe.httpGet?.port)).toBe(defaultPort);
    }
  });

  it('outlasts the preStop pause plus the shutdown grace Gatehouse gives open streams', () => {
    const { preStop } = deployment().container.lifecycle ?? {};
    const command = preStop?.exec?.command ?? [];
    const pause = preStop?.sleep?.seconds ?? (command[0] === 'sleep' ? Number(command[1]) : 0);
    const grace = deployment().loadConfig().config.gateway.shutdown_grace_seconds;
    expect(podSpecOf(deployment().deployment).terminationGracePeriodSeconds).toBeGreaterThan(pause + grace);
  });

  it('routes the Service and the Ingress to the gateway port, and nothing public to the metrics port', () => {
    const { container } = deployment();
    const service = deployment().one('Service', 'gatehouse');
    expect(service.spec?.selector).toEqual(deployment().deployment.spec?.selector?.matchLabels);
    expect(deployment().deployment.spec?.template?.metadata?.labels).toMatchObject(
      deployment().deployment.spec!.selector!.matchLabels!,
    );
    const http = service.spec?.ports?.find((port) => port.name === 'http');
    expect(resolvePort(container, http?.targetPort)).toBe(defaultPort);
    const backends = (deployment().one('Ingress').spec?.rules ?? []).flatMap((rule) => rule.http?.paths ?? []);
    expect(backends.length).toBeGreaterThan(0);
    for (const { backend } of backends) {
      expect(backend?.service?.name).toBe(service.metadata?.name);
      expect(backend?.service?.port?.number).toBe(http?.port);
    }
  });

  it('exposes gateway.metrics_port as the container port and the Service port named metrics', () => {
    const { config } = deployment().loadConfig();
    expect(config.gateway.metrics_port).toBeTypeOf('number');
    // A scraper in the cluster must reach it; the loopback default would hide it inside the pod.
    expect(config.gateway.metrics_host).toBe('0.0.0.0');
    expect(resolvePort(deployment().container, 'metrics')).toBe(config.gateway.metrics_port);
    const metrics = deployment()
      .one('Service', 'gatehouse')
      .spec?.ports?.find((port) => port.name === 'metrics');
    expect(resolvePort(deployment().container, metrics?.targetPort)).toBe(config.gateway.metrics_port);
  });

  it('serves the Ingress over TLS on the host of powerml.website, where the callback URL points', () => {
    const website = new URL(deployment().loadConfig().config.powerml.website!);
    expect(website.protocol).toBe('https:');
    const ingress = deployment().one('Ingress');
    expect(ingress.spec?.rules?.map((rule) => rule.host)).toEqual([website.hostname]);
    expect(ingress.spec?.tls?.flatMap((tls) => tls.hosts ?? [])).toContain(website.hostname);
  });

  it('mounts the config where the image looks for it, with the Secret in the environment', () => {
    const pod = podSpecOf(deployment().deployment);
    const { container } = deployment();
    const name = deployment().one('ConfigMap').metadata?.name;
    const mount = mountOf(container, pod, (volume) => volume.configMap?.name === name);
    expect(mount && posix.join(mount.mountPath, CONFIG_FILE)).toBe(imageConfigPath());
    expect(container.envFrom?.map((source) => source.secretRef?.name)).toContain(
      deployment().one('Secret').metadata?.name,
    );
  });

  it('runs as a non-root user with a read-only root filesystem, writing only gateway.data_dir and /tmp', () => {
    const pod = podSpecOf(deployment().deployment);
    const { container } = deployment();
    expectLockedDown(pod, container);
    const dataDir = deployment().loadConfig().config.gateway.data_dir;
    const mount = container.volumeMounts?.find((candidate) => candidate.mountPath === dataDir);
    expect(mount, `a volume mounted at ${dataDir}`).toBeDefined();
    expect(mount?.readOnly).not.toBe(true);
  });
});

describe.skipIf(!kubectl)('the sqlite overlay', () => {
  it('runs one replica, replaced rather than rolled, with the database on a PersistentVolumeClaim', () => {
    const sqlite = rendered.sqlite;
    expect(sqlite.deployment.spec?.replicas).toBe(1);
    expect(sqlite.deployment.spec?.strategy?.type).toBe('Recreate');
    expect(sqlite.all('PodDisruptionBudget')).toEqual([]);
    const { config } = sqlite.loadConfig();
    const file = config.database.url.slice('sqlite:'.length);
    const pod = podSpecOf(sqlite.deployment);
    const claim = sqlite.one('PersistentVolumeClaim').metadata?.name;
    const mount = mountOf(sqlite.container, pod, (volume) => volume.persistentVolumeClaim?.claimName === claim);
    expect(mount, 'the claim is mounted').toBeDefined();
    expect(posix.dirname(file)).toBe(mount!.mountPath);
    expect(config.gateway.data_dir).toBe(mount!.mountPath);
  });
});

describe.skipIf(!kubectl)('the postgres overlay', () => {
  it('runs at least two replicas, kept through disruptions', () => {
    const postgres = rendered.postgres;
    const spec = postgres.deployment.spec!;
    expect(spec.replicas).toBeGreaterThanOrEqual(2);
    const budget = postgres.one('PodDisruptionBudget');
    expect(budget.spec?.minAvailable).toBeGreaterThanOrEqual(1);
    expect(budget.spec?.selector?.matchLabels).toEqual(spec.selector?.matchLabels);
  });

  it('shares what the replicas need to share: PostgreSQL, Redis, one key hash secret, a trusted ingress range', () => {
    const { config } = rendered.postgres.loadConfig();
    expect(config.database.url).toMatch(/^postgres(ql)?:\/\//);
    expect(config.redis.url).toMatch(/^rediss?:\/\//);
    expect(config.auth.key_hash_secret).toBe(DUMMY_VALUES.GATEHOUSE_KEY_HASH_SECRET);
    expect(config.gateway.trusted_proxies.length).toBeGreaterThan(0);
  });

  it('has a migration Job from the same image, mounting the same config and Secret', () => {
    const job = migrateJob();
    const container = onlyContainer(job);
    const pod = podSpecOf(job);
    expect(job.metadata?.namespace).toBe('gatehouse');
    expect(container.args).toEqual(['migrate']);
    expect(container.image).toBe(rendered.postgres.container.image);
    expect(rendered.postgres.container.args ?? ['serve']).toEqual(['serve']);
    const name = rendered.postgres.one('ConfigMap').metadata?.name;
    const mount = mountOf(container, pod, (volume) => volume.configMap?.name === name);
    expect(mount && posix.join(mount.mountPath, CONFIG_FILE)).toBe(imageConfigPath());
    expect(container.envFrom?.map((source) => source.secretRef?.name)).toContain(
      rendered.postgres.one('Secret').metadata?.name,
    );
    expectLockedDown(pod, container);
  });
});

describe.skipIf(!kubectl)('the servicemonitor component', () => {
  it("adds a ServiceMonitor that scrapes the Service's metrics port", () => {
    // An overlay opting in, as the README shows: the postgres overlay plus the component.
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-kustomize-'));
    try {
      writeFileSync(
        join(dir, 'kustomization.yaml'),
        [
          'apiVersion: kustomize.config.k8s.io/v1beta1',
          'kind: Kustomization',
          'resources:',
          // Kustomize takes relative paths only.
          `  - ${relative(dir, join(kubernetesDir, 'overlays', 'postgres'))}`,
          'components:',
          `  - ${relative(dir, join(kubernetesDir, 'components', 'servicemonitor'))}`,
        ].join('\n'),
      );
      const monitored = new Rendered(render(dir));
      const monitor = monitored.one('ServiceMonitor');
      const service = monitored.one('Service', 'gatehouse');
      expect(monitor.metadata?.namespace).toBe('gatehouse');
      expect(service.metadata?.labels).toMatchObject(monitor.spec?.selector?.matchLabels ?? { missing: 'selector' });
      const ports = service.spec?.ports?.map((port) => port.name);
      expect(monitor.spec?.endpoints?.map((endpoint) => endpoint.port)).toEqual(['metrics']);
      expect(ports).toContain('metrics');
      expect(monitor.spec?.endpoints?.[0]?.path).toBe('/metrics');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function expectLockedDown(pod: PodSpec, container: Container): void {
  expect(pod.securityContext?.runAsNonRoot).toBe(true);
  // The image names its user (`node`); the kubelet can only check a numeric one.
  expect(pod.securityContext?.runAsUser).toBeGreaterThan(0);
  expect(container.securityContext?.readOnlyRootFilesystem).toBe(true);
  expect(container.securityContext?.allowPrivilegeEscalation).toBe(false);
  const tmp = mountOf(container, pod, (volume) => volume.emptyDir !== undefined && volume.name === 'tmp');
  expect(tmp?.mountPath).toBe('/tmp');
}

/** Where the image reads its config: GATEHOUSE_CONFIG in the Dockerfile's final stage. */
function imageConfigPath(): string | undefined {
  return finalStageInstructions()
    .filter(({ keyword }) => keyword === 'ENV')
    .map(({ args }) => /GATEHOUSE_CONFIG=(\S+)/.exec(args)?.[1])
    .find((path) => path !== undefined);
}

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

interface Instruction {
  keyword: string;
  args: string;
}
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
