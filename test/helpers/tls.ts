/**
 * A self-signed certificate for `127.0.0.1` / `localhost`, made with the openssl CLI, for tests of an https server
 * that a client must refuse (or accept only with verification off).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** `false` when openssl is there, else the reason to skip: `test(name, { skip: NO_OPENSSL }, fn)`. */
export const NO_OPENSSL: false | string = hasOpenssl()
  ? false
  : 'openssl is not installed: cannot make a self-signed certificate';

/** A fresh EC key and a self-signed certificate valid for a day (SAN `IP:127.0.0.1`, `DNS:localhost`), in PEM. */
export function selfSignedCert(): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'fngate-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
        ...['-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1'],
        ...['-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
      ],
      { stdio: 'ignore' },
    );
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
