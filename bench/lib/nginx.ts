/**
 * The nginx processes of the bench, each one worker (as Gatehouse is one event loop), run through the
 * test suite's unprivileged launcher: the fixed-answer upstream, the plain reverse proxy anchor, and
 * the forward-auth front that asks Gatehouse's `/v1/auth/check` before proxying.
 */
import { startNginx, type NginxPaths, type RunningNginx } from '../../test/support/nginx.js';

/** A fixed OpenAI chat completion: what the platform answers to every request in the JSON rows. */
export const COMPLETION = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'demo-small',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello.' }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 },
});

/** Keep-alive connections are never recycled during a run: the rows measure steady state. */
const KEEPALIVE_REQUESTS = 10_000_000;
/** Idle upstream connections each nginx keeps, above the largest wrk connection count. */
const UPSTREAM_IDLE = 512;

function nginxConf(paths: NginxPaths, http: string): string {
  return `${paths.housekeeping.main}
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
${paths.housekeeping.http}
access_log off;
keepalive_requests ${KEEPALIVE_REQUESTS};
keepalive_timeout 75s;
${http}
}
`;
}

function upstreamBlock(name: string, url: string): string {
  return `upstream ${name} {
  server ${new URL(url).host};
  keepalive ${UPSTREAM_IDLE};
  keepalive_requests ${KEEPALIVE_REQUESTS};
}`;
}

/** Headers every proxied location sets: HTTP/1.1 with an empty Connection keeps upstream keep-alive. */
const PROXY_KEEPALIVE = 'proxy_http_version 1.1;\n    proxy_set_header Connection "";';

/** Answers every request, whatever its method and path, with COMPLETION. */
export function startJsonUpstream(): Promise<RunningNginx> {
  return startNginx((paths) =>
    nginxConf(
      paths,
      `server {
  listen ${paths.listen};
  location / {
    default_type application/json;
    return 200 '${COMPLETION}';
  }
}`,
    ),
  );
}

/** A plain reverse proxy with upstream keep-alive and no authentication; buffering off, so SSE streams. */
export function startNginxProxy(upstream: string): Promise<RunningNginx> {
  return startNginx((paths) =>
    nginxConf(
      paths,
      `${upstreamBlock('platform', upstream)}
server {
  listen ${paths.listen};
  location / {
    proxy_pass http://platform;
    ${PROXY_KEEPALIVE}
    proxy_buffering off;
  }
}`,
    ),
  );
}

/** nginx `auth_request` in front of the platform, asking Gatehouse (README's configuration, with keep-alive). */
export function startForwardAuth(upstream: string, gatehouse: string): Promise<RunningNginx> {
  return startNginx((paths) =>
    nginxConf(
      paths,
      `${upstreamBlock('platform', upstream)}
${upstreamBlock('gatehouse', gatehouse)}
server {
  listen ${paths.listen};
  location / {
    auth_request /_gatehouse_check;
    auth_request_set $gatehouse_user $upstream_http_x_forwarded_user;
    auth_request_set $gatehouse_email $upstream_http_x_forwarded_email;
    auth_request_set $gatehouse_groups $upstream_http_x_forwarded_groups;
    auth_request_set $gatehouse_key_id $upstream_http_x_forwarded_key_id;
    proxy_pass http://platform;
    ${PROXY_KEEPALIVE}
    proxy_set_header X-Forwarded-User $gatehouse_user;
    proxy_set_header X-Forwarded-Email $gatehouse_email;
    proxy_set_header X-Forwarded-Groups $gatehouse_groups;
    proxy_set_header X-Forwarded-Key-Id $gatehouse_key_id;
    proxy_set_header Authorization "";
    proxy_buffering off;
  }
  location = /_gatehouse_check {
    internal;
    proxy_pass http://gatehouse/v1/auth/check;
    ${PROXY_KEEPALIVE}
    proxy_pass_request_body off;
    proxy_set_header Content-Length "";
    proxy_set_header X-Original-URI $request_uri;
    proxy_set_header X-Forwarded-Uri $request_uri;
    proxy_set_header X-Forwarded-Method $request_method;
  }
}`,
    ),
  );
}
