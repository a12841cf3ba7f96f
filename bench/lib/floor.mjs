// The Node floor: node:http + undici Pool.stream, piping the upstream's answer straight into the response.
// Not a gateway (no routing, no header hygiene): the least a Node process does to proxy one request.
// Env: PORT, UPSTREAM (http://127.0.0.1:port), AUTHORIZATION. Loopback only.
import { createServer } from 'node:http';
import { Pool } from 'undici';

const pool = new Pool(process.env.UPSTREAM, { connections: 256, pipelining: 1 });
const authorization = process.env.AUTHORIZATION;
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

const server = createServer((req, res) => {
  if (req.url === '/__bench_ready') {
    res.end('ok');
    return;
  }
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && k !== 'host') headers[k] = v;
  headers.authorization = authorization;
  headers['x-forwarded-for'] = req.socket.remoteAddress;
  pool.stream(
    { path: req.url, method: req.method, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req },
    ({ statusCode, headers: up }) => {
      for (const k of Object.keys(up)) if (HOP.has(k)) delete up[k];
      res.writeHead(statusCode, up);
      return res;
    },
    (err) => {
      if (err && !res.headersSent) {
        res.writeHead(502);
        res.end();
      }
    },
  );
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
