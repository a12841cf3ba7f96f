/**
 * Reading a body whole within a byte limit, the one loop behind the Admin API's JSON bodies, hmac-auth's digest,
 * aws-lambda's buffered payload, the forwarder's replay buffer and the fetch runtimes' small answers. Each caller decides what an overflow means
 * (a 413, a drain, or passing the rest on as a stream).
 */

/** What was read when a body went past its limit: the bytes so far and the reader, positioned after them. */
export interface Overflow {
  /** Bytes read so far (more than the limit). */
  size: number;
  chunks: Uint8Array[];
  reader: ReadableStreamDefaultReader<Uint8Array>;
}

/** Reads `body` whole when it has at most `limit` bytes; else stops at the chunk that went past it. */
export async function readWithin(
  body: ReadableStream<Uint8Array>,
  limit: number,
): Promise<Uint8Array<ArrayBuffer> | Overflow> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size > limit) return { size, chunks, reader };
  }
  return joinChunks(chunks, size);
}

/** Reads `body` whole (a body whose size is already bounded, e.g. by its Content-Length). */
export async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>> {
  const read = await readWithin(body, Number.POSITIVE_INFINITY);
  if (!(read instanceof Uint8Array)) throw new Error('unreachable: no body is larger than Infinity');
  return read;
}

/** The chunks' bytes in one array (the chunk itself when there is one that owns its whole buffer). */
export function joinChunks(chunks: readonly Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const only = chunks.length === 1 ? chunks[0]! : undefined;
  if (
    only &&
    only.buffer instanceof ArrayBuffer &&
    only.byteOffset === 0 &&
    only.byteLength === only.buffer.byteLength
  ) {
    return only as Uint8Array<ArrayBuffer>;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Stops reading an overflowed body: its source is cancelled (errors ignored: the client may be gone). */
export function dropOverflow(o: Overflow): void {
  void o.reader.cancel().catch(() => {});
}
