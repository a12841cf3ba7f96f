// fastify + @fastify/reply-from with their defaults (undici inside), forwarding /hello/* with the same
// Authorization the gateway route adds (fastify and @fastify/reply-from are devDependencies, pinned).
// Env: PORT, UPSTREAM, AUTHORIZATION. Loopback only.
import replyFrom from '@fastify/reply-from';
import Fastify from 'fastify';

const app = Fastify({ logger: false });
await app.register(replyFrom, { base: process.env.UPSTREAM });
const authorization = process.env.AUTHORIZATION;
app.get('/__bench_ready', async () => 'ok');
app.get('/hello/*', (req, reply) => {
  reply.from(req.url, {
    rewriteRequestHeaders: (_req, headers) => ({ ...headers, authorization, 'x-forwarded-for': req.ip }),
  });
});
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) });
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
