/**
 * The allocator setting fngate's Bun processes run with: `MIMALLOC_PURGE_DELAY=-1`, so Bun's mimalloc keeps the
 * memory it freed for reuse instead of handing it back to the OS 10 ms later (mimalloc's default) and faulting it
 * in again on the next request.
 *
 * Why: under load Bun's `mi-scavenger` thread purged freed pages continuously. Per thread (`/proc/<pid>/task`, wrk
 * -c50) it took 9–14 µs per proxied request, and the main thread paid again for the page faults; with the setting,
 * fngate on Bun used 0.80× the CPU per request (`npx tsx bench/ab.ts --a . --runtime bun --env-b
 * MIMALLOC_PURGE_DELAY=-1`, 8 of 8 pairs less). A long delay is not the same: 10 s still cost 1.12× of `-1`, 1 s
 * 1.12×. The price is memory: RSS under that load levels off at ~160 MiB instead of ~105, and stays there when the
 * load stops (with the default it fell to ~80 MiB within 15 s). bench/README.md has the runs.
 *
 * mimalloc reads its settings once, when the process starts, so this must be in the environment before Bun starts:
 * `npm run start:bun` sets it (package.json; a unit test keeps the two the same), and a Bun primary with `WORKERS`
 * > 1 passes it to the workers it forks. A value the operator set wins (`MIMALLOC_PURGE_DELAY=10` gives mimalloc's
 * default back: less memory held, more CPU).
 */
export const BUN_ALLOCATOR_ENV: Readonly<Record<string, string>> = { MIMALLOC_PURGE_DELAY: '-1' };

/** The settings of {@link BUN_ALLOCATOR_ENV} that `env` does not set itself. */
export function bunAllocatorEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(BUN_ALLOCATOR_ENV)) if (env[name] === undefined) out[name] = value;
  return out;
}
