/**
 * `gatehouse doctor` and `config check` with several providers (`auth_providers`): each provider
 * gets its own provider, client secret and redirect URI lines, labelled with its id, and each fix
 * names that provider's keys and callback URL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatDoctor, runDoctor, type CheckResult } from '../../src/commands/doctor.js';
import { loadConfigFromObject } from '../../src/config/index.js';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { startDemoProvider, type DemoProvider } from '../../src/demo/provider.js';

const WEBSITE = 'http://127.0.0.1:5998';
const SECRET = 'doctor-providers-secret-0123456789';
const PROVIDER_IDS = ['corp', 'partners'] as const;

describe('doctor with several providers', () => {
  let platform: SamplePlatform;
  const providers: DemoProvider[] = [];

  beforeAll(async () => {
    platform = await startSamplePlatform({ chunkDelayMs: 1 });
    for (const id of PROVIDER_IDS) {
      providers.push(
        await startDemoProvider({
          clients: [
            {
              client_id: `gatehouse-${id}`,
              client_secret: SECRET,
              redirect_uris: [`${WEBSITE}/v1/auth/auth/${id}`],
              post_logout_redirect_uris: [WEBSITE],
            },
          ],
        }),
      );
    }
  });

  afterAll(async () => {
    await Promise.all([platform?.close(), ...providers.map((provider) => provider.close())]);
  });

  /** Runs doctor with both providers, `partners` changed by `partnerChanges`. */
  function doctorWith(partnerChanges: Record<string, unknown>): Promise<CheckResult[]> {
    const config = loadConfigFromObject(
      {
        powerml: { website: WEBSITE },
        auth_providers: PROVIDER_IDS.map((id, i) => ({
          id,
          name: id.toUpperCase(),
          client_id: `gatehouse-${id}`,
          client_secret: SECRET,
          server_metadata_url: providers[i]!.metadataUrl,
          ...(id === 'partners' ? partnerChanges : {}),
        })),
        gateway: { upstream: platform.url },
        database: { url: 'sqlite::memory:' },
      },
      'doctor-providers',
    );
    return runDoctor(config);
  }

  it('probes each provider, labelled with its id, at its own callback URL', async () => {
    const results = await doctorWith({});
    const names = results.map((result) => result.name);
    expect(names).toEqual(
      expect.arrayContaining(
        PROVIDER_IDS.flatMap((id) => [`provider ${id}`, `client secret ${id}`, `redirect URI ${id}`]),
      ),
    );
    for (const id of PROVIDER_IDS) {
      expect(results.find((result) => result.name === `redirect URI ${id}`)).toMatchObject({
        ok: true,
        detail: expect.stringContaining(
          `${WEBSITE}/v1/auth/auth/${id} accepted by the provider's authorization endpoint`,
        ),
      });
      expect(results.find((result) => result.name === `client secret ${id}`)?.ok).toBe(true);
    }
    console.log(formatDoctor(results));
  });

  it('fails only the provider whose secret is wrong, with a fix naming its keys', async () => {
    const results = await doctorWith({ client_secret: 'not-the-registered-secret' });
    expect(results.find((result) => result.name === 'client secret corp')?.ok).toBe(true);
    const partners = results.find((result) => result.name === 'client secret partners');
    expect(partners).toMatchObject({
      ok: false,
      detail: expect.stringContaining('client gatehouse-partners rejected'),
    });
    expect(partners?.fix).toContain(
      'check auth_providers[1].client_id and auth_providers[1].client_secret against the client registered',
    );
    expect(formatDoctor(results)).not.toContain('not-the-registered-secret');
  });
});
