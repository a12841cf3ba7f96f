/**
 * The Admin API's X.509 check of `ssls` (src/core/ssl.ts `TlsValidator`) on node:crypto, which Node, Deno and Bun
 * all have: every certificate of the chain parses and is valid now, the key parses, and it is the leaf's key.
 * Workers passes none (no TLS port there; see src/core/ssl.ts).
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import type { TlsValidator } from '../core/ssl.ts';

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));
const subjectOf = (x: X509Certificate) => x.subject.split('\n').join(', ');

export function nodeTlsValidator(now: () => number = Date.now): TlsValidator {
  return (cert, key) => {
    const blocks = cert.match(CERT_BLOCK) ?? [];
    let leaf: X509Certificate | undefined;
    for (const [i, block] of blocks.entries()) {
      const which = blocks.length > 1 ? ` (certificate ${i + 1} of the chain)` : '';
      let x: X509Certificate;
      try {
        x = new X509Certificate(block);
      } catch (err) {
        return `failed to parse cert: ${reason(err)}${which}`;
      }
      leaf ??= x;
      const t = now();
      if (Date.parse(x.validTo) < t) return `certificate expired: ${subjectOf(x)} is valid until ${x.validTo}${which}`;
      if (Date.parse(x.validFrom) > t) {
        return `certificate not yet valid: ${subjectOf(x)} is valid from ${x.validFrom}${which}`;
      }
    }
    if (!leaf) return 'failed to parse cert: no CERTIFICATE block found';
    if (key === undefined) return undefined;
    let k: KeyObject;
    try {
      k = createPrivateKey(key);
    } catch (err) {
      return `failed to parse key: ${reason(err)}`;
    }
    return leaf.checkPrivateKey(k) ? undefined : `the key does not match the certificate (${subjectOf(leaf)})`;
  };
}
