/**
 * The dashboard's schema logic, pure (no DOM): the form generated from a simple plugin JSON schema, a small
 * JSON-schema validator for the live errors of the JSON editor, and which field an Admin API error message names.
 * The validator covers the keywords fngate's generated schemas use (type, enum, const, required, properties,
 * additionalProperties, items, bounds, lengths, pattern, anyOf/oneOf/allOf); anything else passes here and is
 * left to the Admin API, whose 400 is the authority (the UI always sends and shows it).
 */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type Schema = { [k: string]: unknown };

export interface Field {
  name: string;
  kind: 'string' | 'number' | 'integer' | 'boolean' | 'enum';
  required: boolean;
  options?: (string | number | boolean)[];
  default?: unknown;
  description?: string;
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Properties injected into every plugin schema that the generated form leaves to the JSON editor. */
const FORM_SKIPPED = new Set(['_meta']);

/**
 * The form fields of a plugin schema: one per property that is a string, number, integer, boolean or an enum of
 * those. Other properties (objects, arrays, unions) are left to the JSON editor shown with the form. Undefined
 * when no property qualifies (the JSON editor only).
 */
export function formFields(schema: unknown): Field[] | undefined {
  if (!isObject(schema) || schema.type !== 'object' || !isObject(schema.properties)) return undefined;
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const fields: Field[] = [];
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (FORM_SKIPPED.has(name) || !isObject(prop)) continue;
    const base = {
      name,
      required: required.has(name),
      ...(prop.default !== undefined ? { default: prop.default } : {}),
      ...(typeof prop.description === 'string' ? { description: prop.description } : {}),
    };
    if (Array.isArray(prop.enum) && prop.enum.length && prop.enum.every((e) => ['string', 'number', 'boolean'].includes(typeof e))) {
      fields.push({ ...base, kind: 'enum', options: prop.enum as (string | number | boolean)[] });
    } else if (prop.type === 'string' || prop.type === 'number' || prop.type === 'integer' || prop.type === 'boolean') {
      fields.push({ ...base, kind: prop.type });
    }
  }
  return fields.length ? fields : undefined;
}

/** The value a form input's text stands for: a number for number fields (the text itself when it is not one). */
export function fieldValue(field: Field, raw: string | boolean): unknown {
  if (field.kind === 'boolean') return raw === true || raw === 'true';
  const text = String(raw);
  if (field.kind === 'number' || field.kind === 'integer') {
    const n = Number(text);
    return text.trim() !== '' && Number.isFinite(n) ? n : text;
  }
  if (field.kind === 'enum') {
    const opt = field.options?.find((o) => String(o) === text);
    return opt ?? text;
  }
  return text;
}

export interface SchemaError {
  /** JSON path of the value, e.g. `count` or `nodes[0].host` ('' for the root). */
  path: string;
  message: string;
}

const typeOf = (x: unknown): string =>
  x === null ? 'null' : Array.isArray(x) ? 'array' : typeof x === 'number' && Number.isInteger(x) ? 'integer' : typeof x;

function typeMatches(want: string, x: unknown): boolean {
  const t = typeOf(x);
  return want === t || (want === 'number' && t === 'integer');
}

const join = (path: string, key: string | number) =>
  typeof key === 'number' ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`;

/** Errors of `value` against `schema` (empty when valid as far as the covered keywords go). */
export function validate(schema: unknown, value: unknown, path = ''): SchemaError[] {
  if (!isObject(schema)) return [];
  const errs: SchemaError[] = [];
  const err = (message: string) => errs.push({ path, message });
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string];
    if (!types.some((t) => typeMatches(t, value))) {
      err(`wrong type: expected ${types.join(' or ')}, got ${typeOf(value) === 'integer' ? 'number' : typeOf(value)}`);
      return errs;
    }
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    err(`must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    err(`must be ${JSON.stringify(schema.const)}`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) err(`must be >= ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) err(`must be <= ${schema.maximum}`);
    if (typeof schema.exclusiveMinimum === 'number' && value <= schema.exclusiveMinimum) err(`must be > ${schema.exclusiveMinimum}`);
    if (typeof schema.exclusiveMaximum === 'number' && value >= schema.exclusiveMaximum) err(`must be < ${schema.exclusiveMaximum}`);
  }
  if (typeof value === 'string') {
    const len = [...value].length;
    if (typeof schema.minLength === 'number' && len < schema.minLength) err(`must be at least ${schema.minLength} characters`);
    if (typeof schema.maxLength === 'number' && len > schema.maxLength) err(`must be at most ${schema.maxLength} characters`);
    if (typeof schema.pattern === 'string') {
      let re: RegExp | undefined;
      try {
        re = new RegExp(schema.pattern, 'u');
      } catch {
        re = undefined; // a pattern this browser cannot compile: left to the Admin API
      }
      if (re && !re.test(value)) err(`must match ${schema.pattern}`);
    }
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) err(`must have at least ${schema.minItems} items`);
    if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) err(`must have at most ${schema.maxItems} items`);
    if (isObject(schema.items)) for (const [i, item] of value.entries()) errs.push(...validate(schema.items, item, join(path, i)));
  }
  if (isObject(value)) {
    const props = isObject(schema.properties) ? schema.properties : {};
    if (Array.isArray(schema.required)) {
      for (const r of schema.required as string[]) if (value[r] === undefined) errs.push({ path: join(path, r), message: 'is required' });
    }
    for (const [k, v] of Object.entries(value)) {
      if (Object.hasOwn(props, k)) errs.push(...validate(props[k], v, join(path, k)));
      else if (schema.additionalProperties === false) errs.push({ path: join(path, k), message: 'is not allowed' });
      else if (isObject(schema.additionalProperties)) errs.push(...validate(schema.additionalProperties, v, join(path, k)));
    }
  }
  for (const keyword of ['anyOf', 'oneOf'] as const) {
    const branches = schema[keyword];
    if (Array.isArray(branches) && branches.length && !branches.some((b) => validate(b, value, path).length === 0)) {
      err('does not match any of the allowed forms');
    }
  }
  if (Array.isArray(schema.allOf)) for (const b of schema.allOf) errs.push(...validate(b, value, path));
  return errs;
}

export interface NamedError {
  /** The plugin the message is about, if it names one. */
  plugin?: string;
  /** The first property the message names after the plugin (or at the top level), if any. */
  field?: string;
}

/**
 * Which plugin and field an Admin API error message names: `failed to check the configuration of plugin
 * limit-count err: property "count" validation failed: ...` → { plugin: 'limit-count', field: 'count' };
 * `invalid configuration: property "uri" validation failed: ...` → { field: 'uri' }; `unknown plugin [x]` →
 * { plugin: 'x' }.
 */
export function namedIn(message: string): NamedError {
  const out: NamedError = {};
  const plugin = /configuration of plugin (\S+) err:/.exec(message) ?? /unknown plugin \[([^\]]+)\]/.exec(message);
  if (plugin) out.plugin = plugin[1]!;
  const rest = plugin ? message.slice(plugin.index + plugin[0].length) : message;
  const field = /property "([^"]+)"/.exec(rest);
  if (field) out.field = field[1]!;
  return out;
}
