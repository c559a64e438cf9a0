import { html, type SafeHtml } from './html.js';

export interface ChooserProvider {
  id: string;
  name: string;
}

/** Where choosing `provider` leads: the login route with the provider and the page to return to. */
export function chooserHref(loginPath: string, provider: string, returnTo: string): string {
  return `${loginPath}?${new URLSearchParams({ provider, return_to: returnTo }).toString()}`;
}

/**
 * "Sign in with …": one link per provider, in the configured order. Plain links, so the choice
 * works without script, with a keyboard, and is announced as a list of so many items.
 */
export function renderSignInChooser(
  loginPath: string,
  providers: readonly ChooserProvider[],
  returnTo: string,
): SafeHtml {
  return html`<h1>Sign in</h1>
    <p id="chooser-help">Choose the account you use for this service.</p>
    <ul class="providers" aria-labelledby="chooser-help">
      ${providers.map(
        (provider) =>
          html`<li><a class="button" href="${chooserHref(loginPath, provider.id, returnTo)}">Sign in with ${provider.name}</a></li>`,
      )}
    </ul>`;
}

/** The answer to `?provider=` naming no configured provider, with the way to the chooser. */
export function renderUnknownProvider(loginPath: string, returnTo: string): SafeHtml {
  return html`<h1>Unknown sign-in provider</h1>
    <p class="notice error" role="alert">This link names a sign-in provider this service does not know.</p>
    <p><a class="button" href="${loginPath}?return_to=${encodeURIComponent(returnTo)}">Choose how to sign in</a></p>`;
}
