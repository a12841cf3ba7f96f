/**
 * Suites that need a system service (etcd, redis-server, prometheus, chromium) installed from Debian's packages.
 * `npm test` on a machine without them skips such a suite with ONE loud line naming the packages to install;
 * `.ci/run` installs them and sets FNGATE_REQUIRE_SYSTEM=1, which turns a missing one into a failure instead, so CI
 * can never pass by skipping.
 */
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

const announced = new Set<string>();

/** Is `binary` on the PATH (or in the usual system directories)? */
export function hasBinary(binary: string): boolean {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/bin',
    '/usr/local/bin',
    '/usr/sbin',
    '/usr/lib/chromium',
  ];
  return dirs.some((dir) => dir !== '' && existsSync(join(dir, binary)));
}

/**
 * The reason to skip `suite` when one of `binaries` is missing (pass it as the `skip` option of the suite's
 * `describe`/`test`), or false when all are there. Throws under FNGATE_REQUIRE_SYSTEM=1 (CI) instead of skipping.
 */
export function systemSkip(
  suite: string,
  binaries: readonly string[],
  debianPackages: readonly string[],
): string | false {
  const missing = binaries.filter((b) => !hasBinary(b));
  if (missing.length === 0) return false;
  const why = `${suite}: ${missing.join(', ')} not installed (Debian: apt-get install ${debianPackages.join(' ')})`;
  if (process.env.FNGATE_REQUIRE_SYSTEM === '1') throw new Error(`${why}; FNGATE_REQUIRE_SYSTEM=1 forbids skipping it`);
  if (!announced.has(suite)) {
    announced.add(suite);
    console.error(`\n!!! SKIPPED ${why}\n`);
  }
  return `SKIPPED ${why}`;
}
