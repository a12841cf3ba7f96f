/**
 * Base64 without Buffer (every runtime has `atob`/`btoa`), shared by the secrets keyring, the auth plugins and
 * openfunction's service token.
 */

/** Base64 of bytes. */
export function toBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** Base64 of a string's UTF-8 bytes. */
export function textToBase64(text: string): string {
  return toBase64(new TextEncoder().encode(text));
}

const LENIENT = /^[A-Za-z0-9+/]*={0,2}$/;
const STRICT = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The bytes of standard base64 `s`, or undefined when it is not base64 (`atob` alone ignores whitespace). Padding
 * may be left out unless `strict`, which also refuses an empty string (a ciphertext is never either).
 */
export function fromBase64(s: string, strict = false): Uint8Array<ArrayBuffer> | undefined {
  if (strict ? !STRICT.test(s) || s.length % 4 !== 0 : !LENIENT.test(s) || s.length % 4 === 1) return undefined;
  try {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
}
