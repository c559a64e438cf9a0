import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSamplePlatform, type SamplePlatform } from '../../src/demo/platform.js';
import { readAllEvents } from '../support/sse.js';

let platform: SamplePlatform;

beforeAll(async () => {
  platform = await startSamplePlatform({ chunkDelayMs: 50 });
});
afterAll(() => platform.close());

function postJson(path: string, body: unknown): Promise<Response> {
  return fetch(`${platform.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

interface Completion {
  object: string;
  model: string;
  choices: {
    index: number;
    text?: string;
    message?: { role: string; content: string };
    delta?: { role?: string; content?: string };
    finish_reason: string | null;
  }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
}

describe('sample platform', () => {
  it('lists its two models in the OpenAI shape', async () => {
    const response = await fetch(`${platform.url}/v1/models`);
    const body = (await response.json()) as { object: string; data: { id: string; object: string }[] };
    expect(body.object).toBe('list');
    expect(body.data.map((model) => model.id)).toEqual(['demo-small', 'demo-large']);
    expect(body.data[0]?.object).toBe('model');
  });

  it('answers a chat completion by echoing the last user message, with usage', async () => {
    const response = await postJson('/v1/chat/completions', {
      model: 'demo-large',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hello there' },
      ],
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Completion;
    expect(body.object).toBe('chat.completion');
    expect(body.model).toBe('demo-large');
    expect(body.choices[0]?.message).toEqual({ role: 'assistant', content: 'You said: hello there' });
    expect(body.choices[0]?.finish_reason).toBe('stop');
    expect(body.usage).toEqual({ prompt_tokens: 2, completion_tokens: 4, total_tokens: 6 });
  });

  it('answers a text completion by echoing the prompt', async () => {
    const response = await postJson('/v1/completions', { model: 'demo-small', prompt: 'once upon' });
    const body = (await response.json()) as Completion;
    expect(body.object).toBe('text_completion');
    expect(body.choices[0]?.text).toBe('Echo: once upon');
    expect(body.usage?.total_tokens).toBe(5);
  });

  it('refuses invalid JSON with an OpenAI-shaped 400', async () => {
    const response = await postJson('/v1/chat/completions', '{"messages": [');
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ type: 'invalid_request_error', code: null });
    expect(body.error.message).toEqual(expect.any(String));
  });

  it('streams one event per word, then a usage chunk and [DONE]', async () => {
    const response = await postJson('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'one two three' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = (await readAllEvents(response)).events;
    expect(events.at(-1)?.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event.data) as Completion);
    const words = chunks.filter((chunk) => chunk.choices.length > 0);
    expect(words.map((chunk) => chunk.choices[0]?.delta?.content).join('')).toBe('You said: one two three');
    expect(words[0]?.choices[0]?.delta?.role).toBe('assistant');
    expect(words.at(-1)?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 5 } });
  });

  it('delivers streamed chunks separately over time, not in one buffer', async () => {
    const response = await postJson('/v1/completions', { prompt: 'a b c d', stream: true });
    const events = (await readAllEvents(response)).events.filter((event) => event.data !== '[DONE]');
    expect(events).toHaveLength(5);
    const first = events[0]?.at ?? 0;
    const last = events.at(-1)?.at ?? 0;
    expect(last - first).toBeGreaterThanOrEqual(150);
  });

  it('streams /slow-stream with the requested count and pace', async () => {
    const response = await fetch(`${platform.url}/slow-stream?chunks=3&delayMs=20`);
    const events = (await readAllEvents(response)).events;
    const indexes = events.map((event) =>
      event.data === '[DONE]' ? event.data : (JSON.parse(event.data) as { index: number }).index,
    );
    expect(indexes).toEqual([0, 1, 2, '[DONE]']);
  });

  it('stops writing and counts the abort when the client goes away mid-stream', async () => {
    const abortedBefore = platform.abortedStreams();
    const streamed = platform.requests.length;
    // Hang up as soon as the first event arrives, as a browser tab closed mid-answer would.
    await new Promise<void>((resolve, reject) => {
      const request = httpRequest(`${platform.url}/slow-stream?chunks=100&delayMs=20`, (response) => {
        response.once('data', () => {
          request.destroy();
          resolve();
        });
      });
      request.once('error', reject);
      request.end();
    });
    await expect.poll(() => platform.abortedStreams()).toBe(abortedBefore + 1);
    expect(platform.activeStreams()).toBe(0);
    expect(platform.requests.length).toBe(streamed + 1);
  });

  it('echoes method, path, query, headers and body under /echo/', async () => {
    const response = await fetch(`${platform.url}/echo/some/path?x=1&y=two`, {
      method: 'PUT',
      headers: { 'content-type': 'text/plain', 'x-custom': 'kept' },
      body: 'raw body text',
    });
    const body = (await response.json()) as { headers: Record<string, string> };
    expect(body).toMatchObject({ method: 'PUT', url: '/echo/some/path?x=1&y=two', body: 'raw body text' });
    expect(body.headers['x-custom']).toBe('kept');
  });

  it('records each request with its body as text', async () => {
    await postJson('/v1/completions', { prompt: 'recorded' });
    const recorded = platform.requests.at(-1);
    expect(recorded).toMatchObject({ method: 'POST', url: '/v1/completions', body: '{"prompt":"recorded"}' });
    expect(recorded?.headers['content-type']).toBe('application/json');
  });

  it('records nothing when record is false', async () => {
    const quiet = await startSamplePlatform({ record: false });
    try {
      await fetch(`${quiet.url}/v1/models`);
      expect(quiet.requests).toEqual([]);
    } finally {
      await quiet.close();
    }
  });
});

describe("sample platform: Ollama's native API", () => {
  it('answers /api/chat whole when stream is false, with the token counts Ollama reports', async () => {
    const response = await postJson('/api/chat', {
      model: 'demo-large',
      stream: false,
      messages: [{ role: 'user', content: 'two words' }],
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      model: 'demo-large',
      message: { role: 'assistant', content: 'You said: two words' },
      done: true,
      prompt_eval_count: 2,
      eval_count: 4,
    });
  });

  it('streams /api/generate one JSON object per line by default, the last one done', async () => {
    const response = await postJson('/api/generate', { model: 'demo-small', prompt: 'a b' });
    expect(response.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = (await response.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { response: string; done: boolean });
    expect(lines.map((line) => line.response).join('')).toBe('Echo: a b');
    expect(lines.map((line) => line.done)).toEqual([false, false, false, true]);
  });

  it('lists its models on /api/tags and embeds each input on /api/embed', async () => {
    const tags = (await (await fetch(`${platform.url}/api/tags`)).json()) as { models: { name: string }[] };
    expect(tags.models.map((model) => model.name)).toEqual(['demo-small', 'demo-large']);
    const embedded = (await (await postJson('/api/embed', { model: 'demo-small', input: 'x y' })).json()) as {
      embeddings: number[][];
    };
    expect(embedded.embeddings).toHaveLength(1);
  });
});
