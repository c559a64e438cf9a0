/** What a model costs, in budgets.currency per million tokens. */
export interface Price {
  input: number;
  output: number;
}

/**
 * Prices per model. A request keeps the price it was admitted at, so replacing the table (a
 * price change) applies to later requests only.
 */
export class PriceTable {
  private prices: ReadonlyMap<string, Price>;

  constructor(
    prices: Record<string, Price>,
    readonly currency: string,
  ) {
    this.prices = new Map(Object.entries(prices));
  }

  /** Undefined for a model without a price: its requests count tokens only. */
  of(model: string | undefined): Price | undefined {
    return model === undefined ? undefined : this.prices.get(model);
  }

  replace(prices: Record<string, Price>): void {
    this.prices = new Map(Object.entries(prices));
  }
}

/**
 * Millionths of the currency: a price per million tokens times a count of tokens is exactly that,
 * so counters stay integers.
 */
export function costMicros(price: Price | undefined, promptTokens: number, completionTokens: number): number {
  return price ? Math.round(promptTokens * price.input + completionTokens * price.output) : 0;
}

export function microsOf(spend: number): number {
  return Math.round(spend * 1_000_000);
}

/** "12.34 USD"; amounts under a cent keep four decimals so small spends do not read as zero. */
export function formatSpend(micros: number, currency: string): string {
  const amount = micros / 1_000_000;
  return `${amount !== 0 && Math.abs(amount) < 0.01 ? amount.toFixed(4) : amount.toFixed(2)} ${currency}`;
}
