/**
 * A minimal cookie-keeping HTTP client for driving sign-in flows without a browser. Like a browser
 * it keeps cookies per host (not per port) and follows redirects only when asked, so each hop of
 * the OpenID Connect flow can be inspected.
 */
export class Browserless {
  private readonly jar = new Map<string, Map<string, string>>();

  cookie(url: string, name: string): string | undefined {
    return this.jar.get(new URL(url).hostname)?.get(name);
  }

  setCookie(url: string, name: string, value: string): void {
    const host = new URL(url).hostname;
    if (!this.jar.has(host)) this.jar.set(host, new Map());
    this.jar.get(host)!.set(name, value);
  }

  clearCookies(): void {
    this.jar.clear();
  }

  /** One request, no redirect following; stores Set-Cookie. */
  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const host = new URL(url).hostname;
    const cookies = this.jar.get(host);
    const headers = new Headers(init.headers);
    if (cookies?.size && !headers.has('cookie')) {
      headers.set('cookie', [...cookies].map(([name, value]) => `${name}=${value}`).join('; '));
    }
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const index = pair.indexOf('=');
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a) || /^\s*expires=thu, 01 jan 1970/i.test(a));
      if (expired || value === '') this.jar.get(host)?.delete(name);
      else this.setCookie(url, name, value);
    }
    return response;
  }

  /** Follows redirects (at most `limit`) and returns the last response and the URLs visited. */
  async follow(url: string, init: RequestInit = {}, limit = 15): Promise<{ response: Response; visited: string[] }> {
    const visited = [url];
    let response = await this.fetch(url, init);
    while (response.status >= 300 && response.status < 400 && response.headers.has('location')) {
      if (visited.length > limit) throw new Error(`too many redirects: ${visited.join(' -> ')}`);
      const next = new URL(response.headers.get('location')!, visited.at(-1)).href;
      visited.push(next);
      await response.body?.cancel();
      response = await this.fetch(next, { headers: init.headers });
    }
    return { response, visited };
  }
}
