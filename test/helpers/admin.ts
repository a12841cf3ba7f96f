/**
 * An in-process Admin API for unit tests: a memory store, the built-in plugins, one key, silent logs; any
 * option can be overridden.
 */
import { type AdminOptions, createAdmin } from '../../src/core/admin/index.ts';
import { silentLogger } from '../../src/core/context.ts';
import { pluginRegistry } from '../../src/core/plugins/index.ts';
import { MemoryStore } from '../../src/store/memory.ts';

/** The admin key of {@link testAdmin}. */
export const TEST_ADMIN_KEY = 'admin-key-0123456789abcdef';

export function testAdmin(opts: Partial<AdminOptions> = {}): ReturnType<typeof createAdmin> {
  return createAdmin({
    store: new MemoryStore(),
    plugins: pluginRegistry(),
    keys: [TEST_ADMIN_KEY],
    afterWrite: async () => {},
    logger: silentLogger,
    ...opts,
  });
}
