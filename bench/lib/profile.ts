/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and adds up self time per function and per area
 * (a Gatehouse folder, an npm package, Node's internals), as shares of the time the process was busy.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: CallFrame; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  /** Percent of busy time (all samples but `(idle)`). */
  percent: number;
  ms: number;
}

export interface ProfileSummary {
  busyMs: number;
  idleMs: number;
  functions: Array<SelfTime & { where: string }>;
  areas: SelfTime[];
  /**
   * Gatehouse's own functions by inclusive time: self time plus what they call synchronously (an
   * `await` ends a stack, so work resumed after it is not counted under the caller).
   */
  gatehouseInclusive: Array<SelfTime & { where: string }>;
}

/** `file:///…/dist/proxy/forward.js` -> `dist/proxy/forward.js`; `…/node_modules/fastify/lib/x.js` -> `fastify/lib/x.js`. */
function shortUrl(url: string): string {
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) return url.slice(modules + '/node_modules/'.length);
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}

function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native: V8 builtins, C++ bindings)';
  if (url.startsWith('node:')) return 'node internals';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const [scope = '', name = ''] = url.slice(modules + '/node_modules/'.length).split('/');
    return `npm: ${scope.startsWith('@') ? `${scope}/${name}` : scope}`;
  }
  const dist = /\/dist\/(?:([^/]+)\/)?[^/]+\.js$/.exec(url);
  if (dist) return `gatehouse: src/${dist[1] ?? '(top level)'}`;
  return shortUrl(url);
}

export function summariseProfile(path: string, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const inclusive = new Map<string, { name: string; where: string; us: number }>();
  const functions = new Map<string, { name: string; where: string; us: number }>();
  const areas = new Map<string, number>();
  let idleUs = 0;
  let busyUs = 0;
  const share = (us: number) => ({ percent: (100 * us) / busyUs, ms: us / 1000 });
  profile.samples.forEach((id, index) => {
    const us = profile.timeDeltas[index] ?? 0;
    const frame = frames.get(id);
    if (!frame) return;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      return;
    }
    busyUs += us;
    const where = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '';
    const key = `${frame.functionName}@${where}`;
    const entry = functions.get(key) ?? { name: frame.functionName || '(anonymous)', where, us: 0 };
    entry.us += us;
    functions.set(key, entry);
    const area = areaOf(frame);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const counted = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) {
      const caller = frames.get(at);
      if (!caller || !areaOf(caller).startsWith('gatehouse:')) continue;
      const callerWhere = `${shortUrl(caller.url)}:${caller.lineNumber + 1}`;
      const callerKey = `${caller.functionName}@${callerWhere}`;
      if (counted.has(callerKey)) continue;
      counted.add(callerKey);
      const total = inclusive.get(callerKey) ?? {
        name: caller.functionName || '(anonymous)',
        where: callerWhere,
        us: 0,
      };
      total.us += us;
      inclusive.set(callerKey, total);
    }
  });
  const ranked = (entries: Iterable<{ name: string; where: string; us: number }>) =>
    [...entries]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map(({ name, where, us }) => ({ name, where, ...share(us) }));
  return {
    busyMs: busyUs / 1000,
    idleMs: idleUs / 1000,
    functions: ranked(functions.values()),
    areas: [...areas]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ...share(us) })),
    gatehouseInclusive: ranked(inclusive.values()),
  };
}
