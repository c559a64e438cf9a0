/**
 * The Node floor: `node:http` in, undici out, nothing else. No authentication, no access log, no
 * header rewriting beyond the hop-by-hop headers HTTP/1.1 requires to drop: the least a Node proxy
 * can spend on a request, and so the yardstick for what Gatehouse adds on top.
 *
 * Run: PORT=… UPSTREAM=http://127.0.0.1:… [CONNECTIONS=512] node bench/peers/bare-proxy.js
 */
import { createServer } from 'node:http';
import { Pool } from 'undici';

const { PORT, UPSTREAM, CONNECTIONS = '512' } = process.env;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te']);
const pool = new Pool(UPSTREAM, { connections: Number(CONNECTIONS) });

function endToEnd(headers) {
  const kept = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name)) kept[name] = headers[name];
  return kept;
}

createServer((request, response) => {
  pool
    .request({
      path: request.url,
      method: request.method,
      headers: endToEnd(request.headers),
      body: request.method === 'GET' || request.method === 'HEAD' ? undefined : request,
    })
    .then(
      ({ statusCode, headers, body }) => {
        response.writeHead(statusCode, endToEnd(headers));
        body.pipe(response);
      },
      () => {
        response.statusCode = 502;
        response.end();
      },
    );
}).listen(Number(PORT), '127.0.0.1');
