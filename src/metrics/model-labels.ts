/**
 * The `model` label of Gatehouse's metrics. The model is named by the client, so every name it
 * sends cannot become a series of its own: a client could grow the metrics without bound. A name
 * becomes a label only when the operator listed it (`gateway.metrics_models`) or, without a list,
 * when the platform served it successfully while fewer than `MAX_SEEN_MODELS` names are known.
 * Everything else is `other`; a request whose model the gateway did not read is `none`.
 */
export const MAX_SEEN_MODELS = 20;
/** Longer names are not model names a platform serves; they would only bloat a scrape. */
const MAX_MODEL_LENGTH = 128;
/** Printable ASCII without quotes or backslashes: a label value that reads the same everywhere. */
const PLAIN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

export class ModelLabels {
  private readonly known: Set<string>;
  private readonly fixed: boolean;

  constructor(configured: readonly string[]) {
    this.known = new Set(configured);
    this.fixed = configured.length > 0;
  }

  /** The label for a request's model, given whether the platform answered it with a 2xx. */
  labelFor(model: string | undefined, served: boolean): string {
    if (model === undefined) return 'none';
    if (this.known.has(model)) return model;
    if (
      served &&
      !this.fixed &&
      this.known.size < MAX_SEEN_MODELS &&
      model.length <= MAX_MODEL_LENGTH &&
      PLAIN.test(model)
    ) {
      this.known.add(model);
      return model;
    }
    return 'other';
  }
}
