/**
 * A self-signed certificate for `127.0.0.1` / `localhost`, made with the openssl CLI, for tests of an https server
 * that a client must refuse (or accept only with verification off).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

/**
 * A fresh EC key and a self-signed certificate for `cn` (also its DNS SAN), in PEM, made at test time. `expired`:
 * valid only on 2020-01-01 (through `openssl ca`, since `openssl req -days` cannot date one in the past).
 */
export function certFor(cn: string, opts: { expired?: boolean } = {}): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fngate-tls-'));
  const at = (f: string) => join(dir, f);
  try {
    if (!opts.expired) {
      execFileSync(
        'openssl',
        [
          ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
          ...['-keyout', at('key.pem'), '-out', at('cert.pem'), '-days', '2'],
          ...['-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn}`],
        ],
        { stdio: 'ignore' },
      );
    } else {
      writeFileSync(
        at('ca.cnf'),
        '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n',
      );
      writeFileSync(at('index.txt'), '');
      writeFileSync(at('serial'), '01\n');
      execFileSync(
        'openssl',
        [
          ...['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
          ...['-keyout', at('key.pem'), '-out', at('req.csr'), '-subj', `/CN=${cn}`],
        ],
        { stdio: 'ignore' },
      );
      execFileSync(
        'openssl',
        [
          ...['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'key.pem', '-in', 'req.csr'],
          ...['-out', 'cert.pem', '-notext', '-startdate', '20200101000000Z', '-enddate', '20200102000000Z'],
        ],
        { stdio: 'ignore', cwd: dir },
      );
    }
    return { key: readFileSync(at('key.pem'), 'utf8'), cert: readFileSync(at('cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A test certificate authority: its certificate (PEM) and what issues leaf certificates signed by it. */
export interface TestCa {
  cert: string;
  /** A leaf for `cn`, signed by the CA: `server` (SAN `IP:127.0.0.1`, `DNS:localhost`, serverAuth) or `client` (clientAuth). */
  issue(cn: string, use: 'server' | 'client'): { key: string; cert: string };
  /** Removes the CA's private key and files. */
  close(): void;
}

/** A fresh EC certificate authority valid for two days, made with the openssl CLI (for mutual TLS tests). */
export function testCa(name = 'fngate test CA'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'fngate-ca-'));
  const at = (f: string) => join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  execFileSync('openssl', ['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', `/CN=${name}`], {
    stdio: 'ignore',
  });
  let n = 0;
  return {
    cert: readFileSync(at('ca.pem'), 'utf8'),
    issue(cn, use) {
      const i = n++;
      const ext =
        use === 'server'
          ? 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
          : 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n';
      writeFileSync(at(`${i}.ext`), ext);
      execFileSync('openssl', ['req', '-new', ...ec, '-keyout', at(`${i}.key`), '-out', at(`${i}.csr`), '-subj', `/CN=${cn}`], {
        stdio: 'ignore',
      });
      execFileSync(
        'openssl',
        [
          ...['x509', '-req', '-in', at(`${i}.csr`), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial'],
          ...['-out', at(`${i}.pem`), '-days', '2', '-extfile', at(`${i}.ext`)],
        ],
        { stdio: 'ignore' },
      );
      return { key: readFileSync(at(`${i}.key`), 'utf8'), cert: readFileSync(at(`${i}.pem`), 'utf8') };
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
