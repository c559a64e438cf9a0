/**
 * The streaming platform for the SSE rows: every request gets `chunks` OpenAI chat chunks as
 * server-sent events, `delay` ms apart, the first at once. Each chunk carries `sent_ns`, the
 * upstream's CLOCK_MONOTONIC time in ns (process.hrtime is system-wide on Linux), so a client on the
 * same machine can tell how long the chunk took to reach it.
 *
 * A stream whose client leaves before the end is recorded under its `id` query parameter: GET
 * /closed/<id> answers {"closed_ns": "<when the upstream saw the close>"} or {"closed_ns": null}.
 *
 * Run: PORT=8000 node bench/upstreams/sse.js
 */
import { createServer } from 'node:http';
import { clearTimeout, setTimeout } from 'node:timers';
import { URL } from 'node:url';

const MAX_CHUNKS = 10_000;
const MAX_DELAY_MS = 60_000;
/** Bounds memory whatever the bench does: the oldest closes are forgotten first. */
const MAX_RECORDED_CLOSES = 100_000;

const closes = new Map();
let active = 0;

function clamp(value, fallback, max) {
  const number = Number(value ?? fallback);
  return Number.isFinite(number) ? Math.min(Math.max(Math.trunc(number), 0), max) : fallback;
}

function chunk(index, last) {
  return JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: 'demo-small',
    choices: [{ index: 0, delta: { content: ` token${index}` }, finish_reason: last ? 'stop' : null }],
    sent_ns: process.hrtime.bigint().toString(),
  });
}

function recordClose(id) {
  if (closes.size >= MAX_RECORDED_CLOSES) closes.delete(closes.keys().next().value);
  closes.set(id, process.hrtime.bigint().toString());
}

const server = createServer((request, response) => {
  const url = new URL(request.url ?? '/', 'http://upstream');
  if (url.pathname.startsWith('/closed/')) {
    const id = decodeURIComponent(url.pathname.slice('/closed/'.length));
    response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    response.end(JSON.stringify({ closed_ns: closes.get(id) ?? null }));
    return;
  }
  if (url.pathname === '/stats') {
    response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    response.end(JSON.stringify({ active }));
    return;
  }
  request.resume();
  const chunks = clamp(url.searchParams.get('chunks'), 20, MAX_CHUNKS);
  const delayMs = clamp(url.searchParams.get('delay'), 10, MAX_DELAY_MS);
  const id = url.searchParams.get('id');
  response.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  response.flushHeaders();
  active += 1;
  let sent = 0;
  let timer;
  const send = () => {
    sent += 1;
    response.write(`data: ${chunk(sent - 1, sent === chunks)}\n\n`);
    if (sent < chunks) timer = setTimeout(send, delayMs);
    else response.end('data: [DONE]\n\n');
  };
  response.on('close', () => {
    active -= 1;
    clearTimeout(timer);
    if (!response.writableFinished && id) recordClose(id);
  });
  if (chunks > 0) send();
  else response.end('data: [DONE]\n\n');
});

server.keepAliveTimeout = 75_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`sse upstream listening on ${JSON.stringify(server.address())}`);
});
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
