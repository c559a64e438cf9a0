/**
 * The API-key peer: what a team writes by hand with Express 5 and http-proxy-middleware 3. Every
 * request looks its `Authorization: Bearer <key>` up as plaintext in SQLite (better-sqlite3, a
 * prepared statement on the primary key), answers 401 when unknown, and otherwise proxies to the
 * platform over a keep-alive agent with the owner in `X-Forwarded-User`.
 *
 * Run: PORT=… UPSTREAM=http://127.0.0.1:… KEYS_DB=/path/keys.db node bench/peers/express-key.js
 */
import { Agent } from 'node:http';
import SqliteDatabase from 'better-sqlite3';
import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';

const { PORT, UPSTREAM, KEYS_DB } = process.env;
const keys = new SqliteDatabase(KEYS_DB, { readonly: true });
const findKey = keys.prepare('select owner_email from api_keys where key = ?');

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use((request, response, next) => {
  const match = /^Bearer +(\S+)$/i.exec(request.get('authorization') ?? '');
  const row = match ? findKey.get(match[1]) : undefined;
  if (!row) {
    response
      .status(401)
      .set('www-authenticate', 'Bearer')
      .json({
        error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key' },
      });
    return;
  }
  delete request.headers.authorization;
  request.headers['x-forwarded-user'] = row.owner_email;
  next();
});
// Without an agent http-proxy sends `Connection: close` and opens a connection per request.
app.use(createProxyMiddleware({ target: UPSTREAM, agent: new Agent({ keepAlive: true }), xfwd: true }));

const server = app.listen(Number(PORT), '127.0.0.1', () => console.log(`express-key peer on ${PORT} -> ${UPSTREAM}`));
server.keepAliveTimeout = 75_000;
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
