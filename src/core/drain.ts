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
