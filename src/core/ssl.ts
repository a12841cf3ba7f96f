/**
 * APISIX's `ssls` resource (apisix/ssl.lua, apisix/admin/ssl.lua, apisix/ssl/router/radixtree_sni.lua) in the core:
 * checking a certificate/key pair when the Admin API stores it, keeping private keys encrypted at rest, and the
 * SNI table the runtimes' TLS servers pick a certificate from.
 *
 * Parsing X.509 is not done here: the PEM structure is checked in the core (runs everywhere, Workers included), and
 * the full check (DER parse, expiry, key matches the certificate) is a runtime hook, {@link TlsValidator}: Node, Deno
 * and Bun pass one built on node:crypto (src/runtime/tls-check.ts). Workers serves no TLS of its own (Cloudflare
 * terminates it), so its Admin API stores an `ssls` object after the structural check only.
 */
import type { StoredItem, StoreState } from '../store/types.ts';
import { fromBase64 } from './base64.ts';
import type { Logger } from './context.ts';
import { checkSsl } from './schema/ssl.ts';
import type { Keyring } from './secrets.ts';

/**
 * The runtime's full check of a certificate chain (PEM, leaf first) and, when given, its private key: what is wrong
 * (`failed to parse cert: …`, `failed to parse key: …`, `certificate expired on …`, `the key does not match the
 * certificate`), or undefined.
 */
export type TlsValidator = (cert: string, key: string | undefined) => string | undefined;

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const KEY_LABELS = new Set(['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY']);

/** What is wrong with the PEM structure of `text` (`cert`: certificates only; `key`: one unencrypted key). */
export function pemProblem(what: 'cert' | 'key', text: string): string | undefined {
  const fail = (why: string) => `failed to parse ${what}: ${why}`;
  let last = 0;
  let keys = 0;
  let certs = 0;
  for (const m of text.matchAll(PEM_BLOCK)) {
    const before = text.slice(last, m.index);
    if (before.trim() !== '') return fail(`junk outside the PEM blocks: ${JSON.stringify(before.trim().slice(0, 40))}`);
    last = m.index + m[0].length;
    const [, label, body, endLabel] = m;
    if (label !== endLabel) return fail(`PEM block BEGIN ${label} ends with END ${endLabel}`);
    if (what === 'cert' && label !== 'CERTIFICATE') return fail(`a ${label} block where a CERTIFICATE was expected`);
    if (what === 'key') {
      if (label === 'ENCRYPTED PRIVATE KEY') return fail('the key is encrypted with a passphrase; store it unencrypted');
      if (label === 'EC PARAMETERS') continue;
      if (!KEY_LABELS.has(label!)) return fail(`a ${label} block where a PRIVATE KEY was expected`);
      keys++;
    } else certs++;
    const der = fromBase64(body!.replace(/\s+/g, ''), true);
    if (der?.[0] !== 0x30) return fail(`the ${label} block is not base64 of DER`);
  }
  if (text.slice(last).trim() !== '') {
    const junk = text.slice(last).trim();
    return fail(last === 0 ? 'no PEM block found' : `junk outside the PEM blocks: ${JSON.stringify(junk.slice(0, 40))}`);
  }
  if (what === 'key' && keys !== 1) return fail(keys === 0 ? 'no PRIVATE KEY block found' : 'more than one private key');
  if (what === 'cert' && certs === 0) return fail('no CERTIFICATE block found');
  return undefined;
}

/** APISIX's `aes_encrypt_pkey`/`aes_decrypt_pkey`: only PEM text (`---…`) is encrypted; anything else is taken as ciphertext. */
export interface SslKeyCipher {
  /** A copy of an ssl object with `key` and `keys` encrypted (unchanged without a keyring). */
  seal(value: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** A copy with `key` and `keys` decrypted; a value no key decrypts is kept as it is (the check then refuses it). */
  open(value: Record<string, unknown>): Promise<Record<string, unknown>>;
}

export function sslKeyCipher(keyring: Keyring | undefined): SslKeyCipher {
  const mapKeys = async (value: Record<string, unknown>, fn: (s: string) => Promise<string>) => {
    const out = { ...value };
    if (typeof out.key === 'string') out.key = await fn(out.key);
    if (Array.isArray(out.keys)) out.keys = await Promise.all(out.keys.map((k) => (typeof k === 'string' ? fn(k) : k)));
    return out;
  };
  return {
    seal: async (value) =>
      keyring ? mapKeys(value, async (k) => (k.startsWith('---') ? keyring.encrypt(k) : k)) : value,
    open: (value) => mapKeys(value, async (k) => (await decryptKey(k, keyring)) ?? k),
  };
}

/** The PEM of a stored key: itself when it is PEM, else decrypted; undefined when no key of the keyring opens it. */
async function decryptKey(k: string, keyring: Keyring | undefined): Promise<string | undefined> {
  if (k.startsWith('---')) return k;
  return keyring ? keyring.decrypt(k) : undefined;
}

/**
 * APISIX's `check_ssl_conf` on a plaintext value (keys already opened): schema, then each pair (`cert`/`key`, then
 * `certs[i]`/`keys[i]`), with fngate's stricter checks (PEM structure; with a validator, expiry and the key matching).
 */
export function checkSslConf(value: Record<string, unknown>, validator: TlsValidator | undefined): string | undefined {
  const res = checkSsl(value);
  if (!res.ok) return res.message;
  const s = res.value;
  const pair = (cert: string, key: string): string | undefined => {
    if (!key.startsWith('---')) return 'failed to decrypt previous encrypted key';
    return pemProblem('cert', cert) ?? pemProblem('key', key) ?? validator?.(cert, key);
  };
  const bad = pair(s.cert!, s.key!);
  if (bad) return bad;
  if (s.type === 'client') return undefined;
  const certs = s.certs ?? [];
  const keys = s.keys ?? [];
  if (certs.length !== keys.length) return 'mismatched number of certs and keys';
  for (let i = 0; i < certs.length; i++) {
    const why = pair(certs[i]!, keys[i]!);
    if (why) return `failed to handle cert-key pair[${i + 1}]: ${why}`;
  }
  return undefined;
}

/** One server certificate set of the SNI table, keys decrypted. */
export interface SslEntry {
  id: string;
  /** Its SNI names as stored (`sni` or `snis`), for servers that take names rather than a callback (Bun). */
  names: readonly string[];
  /** `cert`/`key` first, then `certs[i]`/`keys[i]` (e.g. an RSA and an ECDSA chain). */
  pairs: readonly { cert: string; key: string }[];
  /** `ssl_protocols`, when set. */
  protocols?: readonly string[];
}

/** The server certificates of a config, matched by SNI as APISIX's radixtree_sni. */
export interface SniTable {
  /** Changes whenever any ssl object changes (the runtimes rebuild their TLS contexts only then). */
  readonly version: string;
  readonly entries: readonly SslEntry[];
  /** Exact name, then `*.<parent>` (one label), then `*`; undefined: the handshake is refused, as APISIX. */
  match(servername: string | undefined): SslEntry | undefined;
  /** A `type: client` ssl by id (upstream `tls.client_cert_id`). */
  client(id: string): SslEntry | undefined;
  /** Whether a server ssl (not `type: client`) has this id: why `client(id)` found none, for the error. */
  isServer(id: string): boolean;
}

/** The name APISIX matches: lower case, without a trailing dot. */
export function normalizeSni(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** The ssl items of a state, as `<id>@<modifiedIndex>` (stable while no ssl object changes). */
export function sslVersionOf(state: StoreState, prefix: string): string {
  const base = `${prefix}/ssls/`;
  const parts: string[] = [];
  for (const item of state.items) if (item.key.startsWith(base)) parts.push(`${item.key}@${item.modifiedIndex}`);
  return parts.sort().join(',');
}

/**
 * Builds the SNI table of a store state (its stored, possibly encrypted, values). An ssl that cannot be used (a
 * key no keyring key decrypts, a schema problem in a config written elsewhere) is left out and logged.
 */
export async function compileSniTable(
  state: StoreState,
  prefix: string,
  keyring: Keyring | undefined,
  logger: Logger,
): Promise<SniTable> {
  const base = `${prefix}/ssls/`;
  const items: StoredItem[] = state.items
    .filter((i) => i.key.startsWith(base) && !i.key.slice(base.length).includes('/'))
    .sort((a, b) => a.createdIndex - b.createdIndex);
  const exact = new Map<string, SslEntry>();
  const clients = new Map<string, SslEntry>();
  const entries: SslEntry[] = [];
  for (const item of items) {
    const id = item.key.slice(base.length);
    const v = item.value;
    if (v.status === 0) continue;
    const res = checkSsl(v);
    if (!res.ok) {
      logger.warn(`ssl ${id} skipped: ${res.message}`);
      continue;
    }
    const s = res.value;
    const certs = [s.cert!, ...(s.certs ?? [])];
    const rawKeys = [s.key!, ...(s.keys ?? [])];
    const keys = await Promise.all(rawKeys.map((k) => decryptKey(k, keyring)));
    const broken = keys.indexOf(undefined);
    if (broken >= 0 || certs.length !== keys.length) {
      logger.warn(`ssl ${id} skipped: failed to decrypt its private key (DATA_ENCRYPTION_KEY)`);
      continue;
    }
    const entry: SslEntry = {
      id,
      names: s.type === 'client' ? [] : (s.snis ?? [s.sni!]).map(normalizeSni),
      pairs: certs.map((cert, i) => ({ cert, key: keys[i]! })),
      protocols: s.ssl_protocols,
    };
    if (s.type === 'client') {
      clients.set(id, entry);
      continue;
    }
    entries.push(entry);
    for (const name of s.snis ?? [s.sni!]) {
      const n = normalizeSni(name);
      if (!exact.has(n)) exact.set(n, entry);
    }
  }
  return {
    version: sslVersionOf(state, prefix),
    entries,
    isServer: (id) => entries.some((e) => e.id === id),
    match(servername) {
      if (!servername) return undefined;
      const n = normalizeSni(servername);
      const hit = exact.get(n);
      if (hit) return hit;
      const dot = n.indexOf('.');
      return (dot > 0 ? exact.get(`*${n.slice(dot)}`) : undefined) ?? exact.get('*');
    },
    client: (id) => clients.get(id),
  };
}

/** An empty table (no ssl objects): every handshake is refused. */
export const EMPTY_SNI_TABLE: SniTable = {
  version: '',
  entries: [],
  match: () => undefined,
  client: () => undefined,
  isServer: () => false,
};
