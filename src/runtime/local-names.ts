/**
 * This machine's host name and interface addresses: the names a wildcard ADMIN_HOST serves the Admin API (and so
 * the dashboard) on, which the metrics export server lets read it (src/core/observability/export-cors.ts).
 * node:os on Node and Bun; on Deno it needs `--allow-sys`, which the narrow permission set does not grant: then
 * only the loopback names are known.
 */
import { hostname, networkInterfaces } from 'node:os';

export function localNames(): string[] {
  const out: string[] = [];
  try {
    out.push(hostname());
    for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) out.push(i.address);
  } catch {
    // Deno without --allow-sys: none.
  }
  return out;
}
