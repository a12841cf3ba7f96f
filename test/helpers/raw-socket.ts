import { connect } from 'node:net';

/**
 * Sends `text` on a new TCP connection to `host:port` and collects everything that comes back (as latin1) until
 * the other side closes the connection, or `ms` passes (then the connection is destroyed): `closed` says which.
 * For the bytes a client sees that `fetch` would hide or refuse (missing Host, bad framing, a cut answer).
 */
export function rawExchange(
  port: number,
  host: string,
  text: string | Buffer,
  ms = 3000,
): Promise<{ answer: string; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = connect(port, host);
    let answer = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      sock.destroy();
    }, ms);
    sock.on('connect', () => sock.write(text));
    sock.on('data', (d) => {
      answer += d.toString('latin1');
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ answer, closed: !timedOut });
    });
  });
}
