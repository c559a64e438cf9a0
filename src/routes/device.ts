import type { FastifyInstance, FastifyReply } from 'fastify';
import { DeviceFlowError, NOT_WAITING, type DeviceFlow } from '../device/flow.js';
import type { PollResult } from '../device/store.js';
import { ForbiddenError, HttpError } from '../errors.js';
import type { Decide } from '../policy/decide.js';
import { renderDeviceConsent, renderDeviceDone, renderDeviceEntry, DEVICE_PAGE_PATH } from '../web/device.js';
import { sendPage } from '../web/pages.js';
import { callerOf, registerGuarded } from './guard.js';

export const DEVICE_CODE_PATH = '/v1/auth/device/code';
export const DEVICE_TOKEN_PATH = '/v1/auth/device/token';
/** RFC 8628 3.4. */
const DEVICE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:device_code';

export interface DeviceRouteOptions {
  flow: DeviceFlow;
  decide: Decide;
  website: string;
}

type Form = Record<string, unknown> | undefined;

/** RFC 6749 5.2: `{error, error_description}`, never cached. */
function sendOAuthError(reply: FastifyReply, error: DeviceFlowError): FastifyReply {
  return reply
    .code(error.status)
    .headers({ ...error.headers, 'cache-control': 'no-store' })
    .send({ error: error.code, error_description: error.message });
}

/**
 * The device authorization grant (RFC 8628): the two endpoints a program calls, which need no
 * credential, and the page where a signed-in person approves, which asks the one decision.
 */
export function registerDeviceRoutes(app: FastifyInstance, options: DeviceRouteOptions): void {
  const { flow, decide, website } = options;

  app.post<{ Body: Form }>(DEVICE_CODE_PATH, async (request, reply) => {
    try {
      const started = await flow.start({
        clientId: request.body?.client_id,
        scope: request.body?.scope,
        deviceName: request.body?.device_name,
        clientAddress: request.ip,
      });
      const verificationUri = `${website}${DEVICE_PAGE_PATH}`;
      return reply.header('cache-control', 'no-store').send({
        device_code: started.deviceCode,
        user_code: started.userCode,
        verification_uri: verificationUri,
        verification_uri_complete: `${verificationUri}?user_code=${started.userCode}`,
        expires_in: Math.round((started.expiresAt - Date.now()) / 1000),
        interval: flow.settings.pollIntervalSeconds,
      });
    } catch (error) {
      if (error instanceof DeviceFlowError) return sendOAuthError(reply, error);
      throw error;
    }
  });

  app.post<{ Body: Form }>(DEVICE_TOKEN_PATH, async (request, reply) => {
    if (request.body?.grant_type !== DEVICE_GRANT_TYPE) {
      return sendOAuthError(
        reply,
        new DeviceFlowError(400, 'unsupported_grant_type', `grant_type must be ${DEVICE_GRANT_TYPE}.`),
      );
    }
    const result = await flow.poll(request.body.device_code);
    if (result.state !== 'approved') {
      return sendOAuthError(reply, new DeviceFlowError(400, result.state, POLL_MESSAGES[result.state]));
    }
    return reply
      .header('cache-control', 'no-store')
      .send({ access_token: result.key, token_type: 'Bearer', key_id: result.keyId });
  });

  registerGuarded(app, decide, 'keys', (scope) => {
    scope.get<{ Querystring: { user_code?: string } }>(DEVICE_PAGE_PATH, async (request, reply) => {
      const { user } = personOf(request);
      const userCode = typeof request.query.user_code === 'string' ? request.query.user_code.slice(0, 20) : '';
      if (!userCode) return sendPage(reply, 200, 'Sign in a device', renderDeviceEntry({ user }));
      const pending = await flow.find(request, userCode);
      if (!pending) {
        return sendPage(reply, 404, 'Sign in a device', renderDeviceEntry({ user, userCode, error: NOT_WAITING }));
      }
      return sendPage(
        reply,
        200,
        'Allow this device?',
        renderDeviceConsent({ user, userCode, request: pending, keyDays: flow.settings.keyDays, now: Date.now() }),
      );
    });

    scope.post<{ Body: Form }>(DEVICE_PAGE_PATH, async (request, reply) => {
      const { user } = personOf(request);
      const userCode = String(request.body?.user_code ?? '').slice(0, 20);
      const action = request.body?.action;
      try {
        if (action === 'approve') {
          const { name } = await flow.approve(request, user, userCode);
          return sendPage(reply, 200, 'Device approved', renderDeviceDone({ approved: true, keyName: name }));
        }
        if (action === 'deny') {
          await flow.deny(request, user, userCode);
          return sendPage(reply, 200, 'Device denied', renderDeviceDone({ approved: false }));
        }
        throw new HttpError(400, 'invalid_action', 'action must be approve or deny.');
      } catch (error) {
        // A code that is no longer waiting, or a key that cannot be made (too many keys), is shown with the form.
        if (!(error instanceof HttpError) || ![400, 404, 409].includes(error.status)) throw error;
        return sendPage(
          reply,
          error.status,
          'Sign in a device',
          renderDeviceEntry({ user, userCode, error: error.message }),
        );
      }
    });
  });
}

const POLL_MESSAGES: Record<Exclude<PollResult['state'], 'approved'>, string> = {
  authorization_pending: 'The person has not approved or denied yet; poll again after the interval.',
  slow_down: 'Polling too fast; the interval is now 5 seconds longer.',
  access_denied: 'The person denied this device.',
  expired_token: 'The device code has expired; start again for a new one.',
  invalid_grant: 'This device code is unknown or was already used.',
};

/**
 * A person approves in a browser: a program's API key, even one allowed to manage keys, may not
 * approve a device for itself.
 */
function personOf(request: Parameters<typeof callerOf>[0]) {
  const identity = callerOf(request);
  if (identity.method !== 'session') {
    throw new ForbiddenError('session_required', 'Approve devices signed in in a browser, not with an API key.');
  }
  return identity;
}
