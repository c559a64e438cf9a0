import { HttpError } from '../errors.js';

/** RFC 7644 section 3.12, table 9: the detail error keywords a 400 carries. */
export type ScimType =
  | 'invalidFilter'
  | 'tooMany'
  | 'uniqueness'
  | 'mutability'
  | 'invalidSyntax'
  | 'invalidPath'
  | 'noTarget'
  | 'invalidValue'
  | 'invalidVers'
  | 'sensitive';

export const ERROR_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:Error';

/** A refusal a SCIM client can act on: its status, and for a 400 or 409 the keyword naming what was wrong. */
export class ScimError extends HttpError {
  readonly scimType: ScimType | undefined;
  constructor(status: number, scimType: ScimType | undefined, detail: string) {
    super(status, scimType ? `scim_${scimType}` : `scim_${status}`, detail);
    this.scimType = scimType;
  }
}

export const invalid = (scimType: ScimType, detail: string) => new ScimError(400, scimType, detail);

/** The RFC 7644 3.12 error body; the status is a string there. */
export function scimErrorBody(status: number, detail: string, scimType?: string): Record<string, unknown> {
  return { schemas: [ERROR_SCHEMA], status: String(status), ...(scimType ? { scimType } : {}), detail };
}
