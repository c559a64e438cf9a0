import { invalid } from './errors.js';

/** One `attribute eq "value"` comparison; `attribute` is the name the caller resolved it to. */
export interface Equality {
  attribute: string;
  value: string;
}

/** Longer filters are no provider's: Okta and Entra send one or two comparisons. */
const MAX_FILTER_LENGTH = 1_000;
const MAX_TERMS = 10;

/** An attribute path (RFC 7644 3.10): optionally a schema URN, then a name and maybe one sub-attribute. */
const ATTRIBUTE = /^(?:urn:[A-Za-z0-9:._-]+:)?([A-Za-z][A-Za-z0-9_$-]*(?:\.[A-Za-z][A-Za-z0-9_$-]*)?)/;
/** A JSON string; JSON.parse then refuses what JSON does not allow in one (raw control characters). */
const STRING = /^"(?:[^"\\]|\\.)*"/;

/**
 * Parses the part of the RFC 7644 3.4.2.2 filter grammar Gatehouse answers: equality with a string,
 * joined by `and` (`userName eq "ada@example.com"`, `externalId eq "00u1" and userName eq "ada"`).
 * `resolve` maps an attribute name (compared without case, as 3.10 says) to what the store
 * filters on, or undefined when it cannot. Anything else is refused with `invalidFilter`, never
 * read as "no filter", which would answer a lookup with every user.
 */
export function parseFilter(text: string, resolve: (name: string) => string | undefined): Equality[] {
  if (text.length > MAX_FILTER_LENGTH)
    throw invalid('invalidFilter', `filter is longer than ${MAX_FILTER_LENGTH} characters.`);
  const terms: Equality[] = [];
  let rest = text.trim();
  for (;;) {
    const name = ATTRIBUTE.exec(rest);
    if (!name) throw unsupported(text);
    const attribute = resolve(name[1]!.toLowerCase());
    if (attribute === undefined) {
      throw invalid('invalidFilter', `filtering on ${name[1]} is not supported; use ${supportedHint}.`);
    }
    rest = rest.slice(name[0].length);
    const operator = /^\s+(\w+)\s+/.exec(rest);
    if (!operator || operator[1]!.toLowerCase() !== 'eq') throw unsupported(text);
    rest = rest.slice(operator[0].length);
    const quoted = STRING.exec(rest);
    if (!quoted) throw unsupported(text);
    terms.push({ attribute, value: parseString(quoted[0], text) });
    rest = rest.slice(quoted[0].length);
    if (rest.trim() === '') break;
    const and = /^\s+and\s+/i.exec(rest);
    if (!and || terms.length >= MAX_TERMS) throw unsupported(text);
    rest = rest.slice(and[0].length);
  }
  return terms;
}

function parseString(quoted: string, text: string): string {
  try {
    return JSON.parse(quoted) as string;
  } catch {
    throw unsupported(text);
  }
}

const supportedHint = 'attribute eq "value", joined by and';

function unsupported(text: string) {
  return invalid(
    'invalidFilter',
    `Gatehouse answers filters of the form ${supportedHint} (e.g. userName eq "ada@example.com"); cannot read ${JSON.stringify(text.slice(0, 200))}.`,
  );
}
