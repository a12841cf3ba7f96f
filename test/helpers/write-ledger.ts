/**
 * The bookkeeping of "a kill -9 in the middle of Admin API writes loses no acknowledged one", shared by
 * test/conformance/lifecycle.test.ts (every runtime) and test/e2e/persistence.test.ts (more rounds, on Node):
 * writers PUT routes, each with a sequence number one higher than the last sent for that id, until the gateway is
 * killed; after the next start the stored routes are held to what was acknowledged and what was sent.
 */
import assert from 'node:assert/strict';

/** A route as the Admin API lists it: the sequence number is read from it by `seqOf`. */
export interface ListedRoute {
  value: { id: string; desc?: string };
}

export class WriteLedger {
  /** Highest sequence number acknowledged (2xx) per route. */
  readonly acked = new Map<string, number>();
  /** Highest sequence number sent per route (acknowledged or not). */
  readonly sent = new Map<string, number>();
  /** PUTs acknowledged so far. */
  total = 0;

  constructor(
    private readonly key: string,
    /** The route PUT as `id` with sequence number `seq`. */
    private readonly routeBody: (id: string, seq: number) => unknown,
    /** The sequence number a stored route holds. */
    readonly seqOf: (value: ListedRoute['value']) => number,
  ) {}

  /**
   * Every acknowledged write is stored, with its sequence number or a later one that was sent; nothing stored holds
   * a number never sent. Returns the stored number per route. `detail` ends the message of a missing route.
   */
  check(list: ListedRoute[], when: string, detail = ''): Map<string, number> {
    const stored = new Map<string, number>();
    for (const it of list) stored.set(it.value.id, this.seqOf(it.value));
    for (const [id, seq] of this.acked) {
      const have = stored.get(id);
      assert.ok(have !== undefined, `${when}: acknowledged route ${id} (seq ${seq}) is missing${detail}`);
      assert.ok(have >= seq, `${when}: route ${id} went back from acknowledged seq ${seq} to ${have}`);
    }
    for (const [id, have] of stored) {
      const max = this.sent.get(id);
      assert.ok(max !== undefined && have <= max, `${when}: route ${id} holds seq ${have}, never sent`);
    }
    return stored;
  }

  /** What is stored is the store's word from now on (a write sent, never acknowledged, that landed counts). */
  adopt(stored: Map<string, number>): void {
    for (const [id, have] of stored) this.acked.set(id, Math.max(this.acked.get(id) ?? 0, have));
  }

  /**
   * Start `writers` loops on the Admin API at `adminUrl`; writer `w` keeps one PUT in flight, on the route
   * `idOf(w, n)` for n = 0, 1, …, until the gateway is gone. Call `stop()` once it is killed: it resolves, when every
   * loop has ended, with the number of PUTs refused (a non-2xx answer) before then.
   */
  startWriters(adminUrl: string, writers: number, idOf: (w: number, n: number) => string): { stop(): Promise<number> } {
    let stop = false;
    let errors = 0;
    const writer = async (w: number) => {
      for (let n = 0; !stop; n++) {
        const id = idOf(w, n);
        const seq = (this.sent.get(id) ?? 0) + 1;
        this.sent.set(id, seq);
        let status = 0;
        try {
          const res = await fetch(`${adminUrl}/apisix/admin/routes/${id}`, {
            method: 'PUT',
            headers: { 'x-api-key': this.key, 'content-type': 'application/json' },
            body: JSON.stringify(this.routeBody(id, seq)),
          });
          await res.text();
          status = res.status;
        } catch {
          return; // the gateway is gone
        }
        if (status >= 200 && status < 300) {
          this.acked.set(id, seq);
          this.total++;
        } else if (!stop) {
          errors++;
        }
      }
    };
    const running = Array.from({ length: writers }, (_, w) => writer(w));
    return {
      async stop() {
        stop = true;
        await Promise.all(running);
        return errors;
      },
    };
  }
}
