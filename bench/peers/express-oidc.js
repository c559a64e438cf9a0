/**
 * The session peer: Express 5 + express-openid-connect 2 (Auth0's OpenID Connect middleware, its
 * defaults: an encrypted cookie session, rolling, re-issued on every response) + http-proxy-middleware
 * 3. `requiresAuth()` guards everything; a signed-in request goes to the platform over a keep-alive
 * agent with the user's `sub` in `X-Forwarded-User`.
 *
 * Run: PORT=… UPSTREAM=… ISSUER=… CLIENT_ID=… CLIENT_SECRET=… SESSION_SECRET=… node bench/peers/express-oidc.js
 */
import { Agent } from 'node:http';
import express from 'express';
import expressOpenidConnect from 'express-openid-connect';
import { createProxyMiddleware } from 'http-proxy-middleware';

const { auth, requiresAuth } = expressOpenidConnect;
const { PORT, UPSTREAM, ISSUER, CLIENT_ID, CLIENT_SECRET, SESSION_SECRET } = process.env;
const baseURL = `http://127.0.0.1:${PORT}`;

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use(
  auth({
    issuerBaseURL: ISSUER,
    baseURL,
    clientID: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    secret: SESSION_SECRET,
    authRequired: false,
    idpLogout: false,
    authorizationParams: { response_type: 'code', scope: 'openid email profile' },
  }),
);
app.use(
  requiresAuth(),
  (request, _response, next) => {
    request.headers['x-forwarded-user'] = request.oidc.user.sub;
    next();
  },
  // Without an agent http-proxy sends `Connection: close` and opens a connection per request.
  createProxyMiddleware({ target: UPSTREAM, agent: new Agent({ keepAlive: true }), xfwd: true }),
);

const server = app.listen(Number(PORT), '127.0.0.1', () =>
  console.log(`express-oidc peer on ${baseURL} -> ${UPSTREAM}`),
);
server.keepAliveTimeout = 75_000;
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
