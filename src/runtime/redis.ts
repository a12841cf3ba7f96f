/**
 * The Redis client of the rate-limit plugins' `redis` and `redis-cluster` policies on Node, Deno and Bun:
 * node-redis (the `redis` package, Redis Inc.'s own client; it runs on all three through their node:net). It is
 * injected into the core (GatewayOptions.limits.redis) by the runtime entries, so it never enters the Worker bundle.
 *
 * A request never waits for a Redis that is not there: commands are not queued while disconnected
 * (`disableOfflineQueue`), so they fail at once and the plugin answers per `allow_degradation`; only during the
 * first `redis_timeout` after the client was made does a call wait for the first connection. The core bounds
 * every call by `redis_timeout` on top (src/core/limits/redis.ts).
 */
import { createHash } from 'node:crypto';
import { createClient, createCluster } from 'redis';
import type { Logger } from '../core/context.ts';
import type { RedisClient, RedisConf, RedisConnector } from '../core/limits/backend.ts';

function hostPort(node: string): { host: string; port: number } {
  const i = node.lastIndexOf(':');
  const host = i > 0 ? node.slice(0, i).replace(/^\[(.*)\]$/, '$1') : node;
  const port = i > 0 ? Number(node.slice(i + 1)) : 6379;
  return { host, port: Number.isInteger(port) && port > 0 ? port : 6379 };
}

const shaOf = new Map<string, string>();
function sha1(script: string): string {
  let sha = shaOf.get(script);
  if (sha === undefined) {
    sha = createHash('sha1').update(script).digest('hex');
    shaOf.set(script, sha);
  }
  return sha;
}

/** A RedisConnector for the runtime entries; connection errors are logged at most once every 10 s per client. */
export function redisConnector(logger: Logger): RedisConnector {
  return (conf) => connectRedis(conf, logger);
}

export function connectRedis(conf: RedisConf, logger: Logger): RedisClient {
  const made = Date.now();
  let lastLog = 0;
  const onError = (err: Error) => {
    const now = Date.now();
    if (now - lastLog < 10_000) return;
    lastLog = now;
    logger.warn('redis (rate limits): connection problem', { nodes: conf.nodes.join(','), error: err.message });
  };
  const socket = {
    connectTimeout: conf.timeoutMs,
    // Keep trying, at most every 2 s, so a Redis that comes back is used again.
    reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 2000),
    ...(conf.ssl ? { tls: true as const, rejectUnauthorized: conf.sslVerify } : {}),
  };
  if (conf.cluster) {
    const cluster = createCluster({
      rootNodes: conf.nodes.map((n) => ({ socket: { ...hostPort(n), ...socket } })),
      defaults: { username: conf.username, password: conf.password || undefined, socket, disableOfflineQueue: true },
    });
    cluster.on('error', onError);
    const ready = cluster.connect().catch(onError);
    return {
      async eval(script, keys, args) {
        if (Date.now() - made < conf.timeoutMs) await ready;
        return cluster.eval(script, { keys, arguments: args });
      },
      async close() {
        await Promise.resolve(cluster.destroy()).catch(() => {});
      },
    };
  }
  const client = createClient({
    socket: { ...hostPort(conf.nodes[0]!), ...socket },
    username: conf.username,
    password: conf.password || undefined,
    database: conf.database,
    disableOfflineQueue: true,
  });
  client.on('error', onError);
  const ready = client.connect().catch(onError);
  return {
    async eval(script, keys, args) {
      if (!client.isReady && Date.now() - made < conf.timeoutMs) await ready;
      const sha = sha1(script);
      try {
        return await client.sendCommand(['EVALSHA', sha, String(keys.length), ...keys, ...args]);
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
        return client.sendCommand(['EVAL', script, String(keys.length), ...keys, ...args]);
      }
    },
    async close() {
      await Promise.resolve(client.destroy()).catch(() => {});
    },
  };
}
