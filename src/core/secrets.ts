/**
 * Secrets at rest, as APISIX's `data_encryption` (apisix/core/data_encryption.lua): plugin fields named in a
 * plugin's `secretFields` (APISIX `encrypt_fields`, e.g. openfunction's `authorization.service_token`) are
 * encrypted before they are written to the store and decrypted when a snapshot is compiled or the Admin API
 * answers a GET. An upstream's client key (`tls.client_key` of an upstream, `upstream.tls.client_key` of a route or
 * service) is sealed the same way, as APISIX's `aes_encrypt_pkey` does it: only PEM text is encrypted. A
 * `plugin_metadata/<name>` item's own fields named in the plugin's `metadataSecretFields` (azure-functions'
 * `master_apikey`) are sealed too, as apisix/admin/plugin_metadata.lua does with the metadata schema's `encrypt_fields`.
 *
 * Cipher, byte-compatible with APISIX: AES-CBC with PKCS#7 padding, key = the keyring entry's UTF-8 bytes
 * (16 bytes → AES-128, 32 bytes → AES-256), IV = the first 16 bytes of the same entry, output base64.
 * Encryption uses the first key; decryption tries every key in order; a value no key decrypts is used as it
 * is (APISIX does the same, so plaintext written before a key was configured keeps working).
 * Portable: WebCrypto (`crypto.subtle`) and `atob`/`btoa` only.
 */
import type { StoredItem, StoreState } from '../store/types.ts';
import { fromBase64, toBase64 } from './base64.ts';
import type { PluginRegistry } from './plugins/index.ts';

export class KeyringError extends Error {
  override name = 'KeyringError';
}

const enc = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Splits and checks a `DATA_ENCRYPTION_KEY` value (comma-separated keys). Each key must be 16 or 32 bytes
 * of UTF-8. APISIX silently skips keys of other lengths; fngate refuses them, since a skipped key would
 * store secrets in plaintext without anyone noticing. Messages never repeat a key.
 */
export function parseKeyring(raw: string, name = 'DATA_ENCRYPTION_KEY'): string[] {
  const keys = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  keys.forEach((k, i) => {
    const n = enc.encode(k).byteLength;
    if (n !== 16 && n !== 32) {
      throw new KeyringError(
        `${name}: key ${i + 1} is ${n} bytes long; each key must be 16 bytes (AES-128) or 32 bytes (AES-256)`,
      );
    }
  });
  return keys;
}

export interface Keyring {
  /** Number of keys; encryption uses the first. */
  readonly size: number;
  /** AES-CBC with the first key, base64. */
  encrypt(plain: string): Promise<string>;
  /** The plaintext, or undefined when no key decrypts `value` (not base64, wrong key, not UTF-8 text). */
  decrypt(value: string): Promise<string | undefined>;
}

interface AesKey {
  key: CryptoKey;
  iv: Uint8Array<ArrayBuffer>;
}

/** Builds a keyring from checked keys (see {@link parseKeyring}). An empty list is refused: use no keyring. */
export async function createKeyring(keys: readonly string[]): Promise<Keyring> {
  if (keys.length === 0) throw new KeyringError('a keyring needs at least one key');
  const aes: AesKey[] = await Promise.all(
    keys.map(async (k, i) => {
      const bytes = enc.encode(k);
      if (bytes.byteLength !== 16 && bytes.byteLength !== 32) {
        throw new KeyringError(`key ${i + 1} is ${bytes.byteLength} bytes long; each key must be 16 or 32 bytes`);
      }
      const key = await crypto.subtle.importKey('raw', bytes, { name: 'AES-CBC' }, false, ['encrypt', 'decrypt']);
      return { key, iv: bytes.slice(0, 16) };
    }),
  );
  const first = aes[0]!;
  return {
    size: aes.length,
    async encrypt(plain) {
      const out = await crypto.subtle.encrypt({ name: 'AES-CBC', iv: first.iv }, first.key, enc.encode(plain));
      return toBase64(new Uint8Array(out));
    },
    async decrypt(value) {
      const bytes = fromBase64(value, true);
      if (!bytes || bytes.byteLength === 0 || bytes.byteLength % 16 !== 0) return undefined;
      for (const k of aes) {
        try {
          const out = await crypto.subtle.decrypt({ name: 'AES-CBC', iv: k.iv }, k.key, bytes);
          // A wrong key yields valid padding about once in 256 tries; requiring UTF-8 text rejects most of those.
          return strictUtf8.decode(out);
        } catch {
          // bad padding or not text: try the next key
        }
      }
      return undefined;
    },
  };
}

/** Dotted secret paths per plugin name, split once. */
export type SecretPaths = ReadonlyMap<string, readonly (readonly string[])[]>;

export function secretPathsOf(registry: PluginRegistry, which: 'secretFields' | 'metadataSecretFields' = 'secretFields'): SecretPaths {
  const out = new Map<string, string[][]>();
  for (const p of registry.values()) {
    const fields = p[which];
    if (fields?.length) out.set(p.name, fields.map((f) => f.split('.')));
  }
  return out;
}

/** The plugin name of a `…/plugin_metadata/<name>` store key, else undefined. */
export function metadataPluginOf(key: string): string | undefined {
  const at = key.lastIndexOf('/');
  if (at < 0) return undefined;
  const dir = key.lastIndexOf('/', at - 1);
  return key.slice(dir + 1, at) === 'plugin_metadata' ? key.slice(at + 1) : undefined;
}

/**
 * A copy of `plugin_metadata/<plugin>`'s value with `fn` applied to the plugin's metadata secret fields; `value`
 * itself when the plugin has none.
 */
export async function transformMetadataSecrets(
  plugin: string,
  value: Record<string, unknown>,
  paths: SecretPaths,
  fn: Transform,
): Promise<Record<string, unknown>> {
  const list = paths.get(plugin);
  if (!list) return value;
  const out = structuredClone(value);
  for (const path of list) await transformAt(out, path, 0, fn);
  return out;
}

type Transform = (s: string) => Promise<string>;

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/**
 * Applies `fn` to the leaf at `path` under `node` in place (node is a private copy). As APISIX's
 * `process_encrypt_field`: arrays on the way are traversed; a leaf may be a string, an array of strings or
 * an object of strings. Anything else is left alone.
 */
async function transformAt(node: unknown, path: readonly string[], i: number, fn: Transform): Promise<void> {
  if (Array.isArray(node)) {
    for (const el of node) await transformAt(el, path, i, fn);
    return;
  }
  if (!isObj(node)) return;
  const k = path[i]!;
  if (!Object.hasOwn(node, k)) return;
  const v = node[k];
  if (i < path.length - 1) {
    await transformAt(v, path, i + 1, fn);
    return;
  }
  if (typeof v === 'string') node[k] = await fn(v);
  else if (Array.isArray(v)) {
    for (let j = 0; j < v.length; j++) if (typeof v[j] === 'string') v[j] = await fn(v[j] as string);
  } else if (isObj(v)) {
    for (const [kk, vv] of Object.entries(v)) if (typeof vv === 'string') v[kk] = await fn(vv);
  }
}

/** True when some plugin of `value.plugins` has a secret field. */
function hasSecrets(value: Record<string, unknown>, paths: SecretPaths): boolean {
  const plugins = value.plugins;
  if (!isObj(plugins)) return false;
  for (const name of Object.keys(plugins)) if (paths.has(name)) return true;
  return false;
}

/**
 * A copy of a stored resource (route, service, plugin config, global rule, consumer...) with `fn` applied to
 * every secret field of its `plugins`. Returns `value` itself when it holds no secret field.
 */
export async function transformSecrets(
  value: Record<string, unknown>,
  paths: SecretPaths,
  fn: Transform,
  keyFn?: Transform,
): Promise<Record<string, unknown>> {
  const plugins = hasSecrets(value, paths);
  const key = keyFn !== undefined && clientKeyHolder(value) !== undefined;
  if (!plugins && !key) return value;
  const out = structuredClone(value);
  if (plugins) {
    for (const [name, conf] of Object.entries(out.plugins as Record<string, unknown>)) {
      const list = paths.get(name);
      if (!list) continue;
      for (const path of list) await transformAt(conf, path, 0, fn);
    }
  }
  if (key) {
    const tls = clientKeyHolder(out)!;
    tls.client_key = await keyFn!(tls.client_key as string);
  }
  return out;
}

/**
 * The `tls` object holding an upstream's client key (APISIX encrypts `upstream.tls.client_key` as an ssl's key):
 * `tls` of an upstream, or `upstream.tls` of a route or service with an inline upstream.
 */
function clientKeyHolder(value: Record<string, unknown>): Record<string, unknown> | undefined {
  const up = isObj(value.upstream) ? value.upstream : value;
  const tls = up.tls;
  return isObj(tls) && typeof tls.client_key === 'string' ? tls : undefined;
}

/** The secret field values of a resource (for tests and log scrubbing). */
export function secretValues(value: Record<string, unknown>, paths: SecretPaths): string[] {
  const found: string[] = [];
  const strings = (xs: Iterable<unknown>) => {
    for (const s of xs) if (typeof s === 'string') found.push(s);
  };
  const collect = (node: unknown, path: readonly string[], i: number): void => {
    if (Array.isArray(node)) {
      for (const el of node) collect(el, path, i);
      return;
    }
    if (!isObj(node) || !Object.hasOwn(node, path[i]!)) return;
    const v = node[path[i]!];
    if (i < path.length - 1) collect(v, path, i + 1);
    else if (typeof v === 'string') found.push(v);
    else if (Array.isArray(v)) strings(v);
    else if (isObj(v)) strings(Object.values(v));
  };
  const plugins = value.plugins;
  if (!isObj(plugins)) return found;
  for (const [name, conf] of Object.entries(plugins)) for (const path of paths.get(name) ?? []) collect(conf, path, 0);
  return found;
}

/**
 * The secret side of the gateway: encryption before a store write, decryption for a snapshot and for Admin
 * GETs. Without a keyring every method returns its input unchanged (secrets stored in plaintext).
 */
export interface Secrets {
  readonly enabled: boolean;
  /** Encrypt the secret fields of a resource about to be stored. */
  seal(value: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Decrypt the secret fields of a stored resource; values no key decrypts are kept as they are. */
  open(value: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** A store state with every item opened (memoised by ciphertext across calls, bounded by the config's size). */
  openState(state: StoreState): Promise<StoreState>;
  /** {@link Secrets.seal} for `plugin_metadata/<plugin>`, whose secret fields are the value's own. */
  sealMetadata(plugin: string, value: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** The inverse of {@link Secrets.sealMetadata}. */
  openMetadata(plugin: string, value: Record<string, unknown>): Promise<Record<string, unknown>>;
}

export function createSecrets(registry: PluginRegistry, keyring: Keyring | undefined): Secrets {
  const paths = secretPathsOf(registry);
  const metadataPaths = secretPathsOf(registry, 'metadataSecretFields');
  if (!keyring) {
    return {
      enabled: false,
      seal: async (v) => v,
      open: async (v) => v,
      openState: async (s) => s,
      sealMetadata: async (_, v) => v,
      openMetadata: async (_, v) => v,
    };
  }
  const decryptOrKeep = async (s: string) => (await keyring.decrypt(s)) ?? s;
  // Upstream client keys as apisix/ssl.lua's aes_encrypt_pkey/aes_decrypt_pkey: only PEM text is encrypted, and
  // only what is not PEM is decrypted.
  const sealKey = async (s: string) => (s.startsWith('---') ? keyring.encrypt(s) : s);
  const openKey = async (s: string) => (s.startsWith('---') ? s : decryptOrKeep(s));
  // Ciphertext → plaintext of the last openState; rebuilt each time so that it only holds current secrets.
  let memo = new Map<string, string>();
  return {
    enabled: true,
    seal: (v) => transformSecrets(v, paths, (s) => keyring.encrypt(s), sealKey),
    open: (v) => transformSecrets(v, paths, decryptOrKeep, openKey),
    sealMetadata: (plugin, v) => transformMetadataSecrets(plugin, v, metadataPaths, (s) => keyring.encrypt(s)),
    openMetadata: (plugin, v) => transformMetadataSecrets(plugin, v, metadataPaths, decryptOrKeep),
    async openState(state) {
      const next = new Map<string, string>();
      const fn = async (s: string) => {
        let plain = next.get(s) ?? memo.get(s);
        if (plain === undefined) plain = await decryptOrKeep(s);
        next.set(s, plain);
        return plain;
      };
      const items: StoredItem[] = [];
      for (const item of state.items) {
        const plugin = metadataPluginOf(item.key);
        const value =
          plugin !== undefined
            ? await transformMetadataSecrets(plugin, item.value, metadataPaths, fn)
            : await transformSecrets(item.value, paths, fn, (k) => (k.startsWith('---') ? Promise.resolve(k) : fn(k)));
        items.push(value === item.value ? item : { ...item, value });
      }
      memo = next;
      return { revision: state.revision, items };
    },
  };
}
