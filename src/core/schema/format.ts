import type { BaseIssue } from 'valibot';

/** Message marker for `v.number(INTEGER)` in `v.pipe(v.number(INTEGER), v.integer())`: reported as "expected integer". */
export const INTEGER = 'integer';

/**
 * Turns a valibot issue into the wording of APISIX's JSON-schema validator (lua jsonschema), so error
 * messages read as APISIX users know them:
 *   property "uri" validation failed: wrong type: expected string, got number
 *   property "function_uri" is required
 *   additional properties forbidden, found foo
 */
export function formatIssue(issue: BaseIssue<unknown>): string {
  if ((issue.type === 'union' || issue.type === 'variant') && issue.issues) {
    // Report the branch that got furthest: its message names the real problem.
    let best = issue.issues[0];
    for (const sub of issue.issues) if ((sub.path?.length ?? 0) > (best.path?.length ?? 0)) best = sub;
    if (best.path?.length) {
      // Sub-issues of a union carry paths relative to the union itself.
      const path = [...(issue.path ?? []), ...best.path] as NonNullable<BaseIssue<unknown>['path']>;
      return formatIssue({ ...best, path });
    }
    // No branch got into the value: a branch whose own check refused it (a reserved record key) says why.
    const custom = issue.issues.find((sub) => sub.type === 'custom');
    if (custom) return formatIssue({ ...custom, path: issue.path });
  }
  const path = issue.path ?? [];
  const keys: (string | number)[] = [];
  for (const item of path) keys.push(item.key as string | number);
  const lastKey = keys[keys.length - 1];
  const parentKeys = keys.slice(0, -1);
  if (issue.type === 'strict_object' && issue.expected === 'never' && typeof lastKey === 'string') {
    // An unknown key is reported at the object that holds it.
    return wrap(parentKeys, `additional properties forbidden, found ${lastKey}`);
  }
  if (issue.received === 'undefined' && issue.kind === 'schema' && typeof lastKey === 'string' && isObjectParent(path)) {
    return wrap(parentKeys, `property "${lastKey}" is required`);
  }
  return wrap(keys, leafMessage(issue));
}

function isObjectParent(path: readonly { type: string }[]): boolean {
  const last = path[path.length - 1];
  return last !== undefined && last.type === 'object';
}

function wrap(keys: (string | number)[], msg: string): string {
  let out = msg;
  for (let i = keys.length - 1; i >= 0; i--) {
    const k = keys[i];
    out = typeof k === 'number' ? `failed to validate item ${k + 1}: ${out}` : `property "${String(k)}" validation failed: ${out}`;
  }
  return out;
}

const TYPE_NAMES: Record<string, string> = {
  string: 'string',
  number: 'number',
  boolean: 'boolean',
  object: 'object',
  strict_object: 'object',
  loose_object: 'object',
  record: 'object',
  array: 'array',
  integer: 'integer',
};

function jsonType(input: unknown): string {
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'array';
  return typeof input;
}

function leafMessage(issue: BaseIssue<unknown>): string {
  const expectedType = issue.type === 'number' && issue.message === INTEGER ? 'integer' : TYPE_NAMES[issue.type];
  if (issue.kind === 'schema' && expectedType) {
    return `wrong type: expected ${expectedType}, got ${jsonType(issue.input)}`;
  }
  const req = issue.requirement;
  switch (issue.type) {
    case 'picklist':
    case 'literal':
    case 'enum':
      return 'matches none of the enum values';
    case 'integer':
      return `wrong type: expected integer, got ${jsonType(issue.input)}`;
    case 'min_length':
      return typeof issue.input === 'string'
        ? `string too short, expected at least ${String(req)}, got ${issue.input.length}`
        : `expect array to have at least ${String(req)} items`;
    case 'max_length':
      return typeof issue.input === 'string'
        ? `string too long, expected at most ${String(req)}, got ${issue.input.length}`
        : `expect array to have at most ${String(req)} items`;
    case 'min_value':
      return `expected ${String(issue.input)} to be at least ${String(req)}`;
    case 'max_value':
      return `expected ${String(issue.input)} to be at most ${String(req)}`;
    case 'regex':
      return `failed to match pattern ${JSON.stringify(String((req as RegExp).source))} with ${JSON.stringify(issue.input)}`;
    case 'union':
    case 'variant':
      return 'object matches none of the required';
    default:
      return issue.message;
  }
}
