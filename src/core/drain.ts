/**
 * After a refused upload: read and drop what the client is still sending, bounded in bytes and time, so the
 * client can read the answer (nginx's lingering close). Cutting the connection instead makes the client's
 * write fail and it never sees the 413.
 */
export async function drain(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  limits: { bytes: number; ms: number },
): Promise<void> {
  const deadline = Date.now() + limits.ms;
  let drained = 0;
  try {
    while (drained < limits.bytes && Date.now() < deadline) {
      const { done, value } = await reader.read();
      if (done) return;
      drained += value.byteLength;
    }
    await reader.cancel();
  } catch {
    // the client went away: nothing left to drain
  }
}

/** The drains started by {@link drainInBackground}, by body, until the body is garbage. */
const draining = new WeakMap<ReadableStream<Uint8Array>, Promise<void>>();

/**
 * {@link drain} a body while its refusal is already being sent. The runtime's server can ask {@link drainOf} when
 * that is over, to close the connection only then (src/runtime/refused-body.ts): closing earlier with unread bytes
 * makes the client's system discard the answer.
 */
export function drainInBackground(body: ReadableStream<Uint8Array>, limits: { bytes: number; ms: number }): void {
  draining.set(body, drain(body.getReader(), limits));
}

/** The drain {@link drainInBackground} started on `body`, if any. */
export function drainOf(body: ReadableStream<Uint8Array>): Promise<void> | undefined {
  return draining.get(body);
}
