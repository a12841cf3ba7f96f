/**
 * Rate-limit counters in Cloudflare Durable Objects, the Workers answer to "one process is not enough": a Worker
 * isolate's memory is its own (and isolates come and go in every location), so `policy: "local"` counts there in
 * ONE Durable Object per counter key, wherever the request lands. Each decision is one call to that object, which
 * runs {@link LimitObject} (single-threaded: no two requests interleave) and keeps its entries in its storage.
 *
 * Only structural types here: the core imports nothing from `cloudflare:*`; src/runtime/worker.ts binds the class.
 */
import { type CountDecision, type LimitBackend, LocalLimits, type MaybePromise } from './backend.ts';
import { LimitBackendError } from './redis.ts';

/** The parts of a `DurableObjectNamespace` used here. */
export interface DurableNamespaceLike {
  idFromName(name: string): unknown;
  get(id: never): { fetch(input: string, init?: RequestInit): Promise<Response> };
}

/** The parts of `DurableObjectState` used here. */
export interface DurableStateLike {
  storage: {
    get<T>(key: string): Promise<T | undefined>;
    put(key: string, value: unknown): Promise<void>;
    delete(key: string): Promise<boolean>;
  };
  blockConcurrencyWhile<T>(fn: () => Promise<T>): Promise<T>;
}

type Op =
  | { op: 'count'; key: string; limit: number; windowS: number; sliding: boolean }
  | { op: 'leaky'; key: string; rate: number; burst: number }
  | { op: 'connIn'; key: string; max: number }
  | { op: 'connOut'; key: string };

/** How long a decision may take before the request is answered per allow_degradation. */
const CALL_TIMEOUT_MS = 2000;

/** The Worker side: a LimitBackend whose every call goes to the Durable Object of its key. */
export class DurableLimits implements LimitBackend {
  constructor(private readonly ns: DurableNamespaceLike) {}

  private async call(body: Op): Promise<unknown> {
    const stub = this.ns.get(this.ns.idFromName(body.key) as never);
    let res: Response;
    try {
      res = await stub.fetch('https://limits.internal/', {
        method: 'POST',
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    } catch (err) {
      throw new LimitBackendError(`durable object: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (res.status !== 200) throw new LimitBackendError(`durable object answered ${res.status}`);
    return res.json();
  }

  async count(key: string, limit: number, windowS: number, sliding: boolean): Promise<CountDecision> {
    const r = (await this.call({ op: 'count', key, limit, windowS, sliding })) as CountDecision;
    if (typeof r?.allowed !== 'boolean' || typeof r.remaining !== 'number' || typeof r.resetS !== 'number')
      throw new LimitBackendError('durable object: bad count reply');
    return r;
  }

  async leaky(key: string, rate: number, burst: number): Promise<number> {
    const r = await this.call({ op: 'leaky', key, rate, burst });
    if (typeof r !== 'number') throw new LimitBackendError('durable object: bad leaky reply');
    return r;
  }

  async connIn(key: string, max: number): Promise<number> {
    const r = await this.call({ op: 'connIn', key, max });
    if (typeof r !== 'number') throw new LimitBackendError('durable object: bad connection reply');
    return r;
  }

  async connOut(key: string): Promise<void> {
    await this.call({ op: 'connOut', key });
  }
}

const STORAGE_KEY = 'entries';

/**
 * The Durable Object side: the counters of one key, in memory for speed and written to the object's storage
 * after each change (the answer leaves only once the write is durable: Cloudflare's output gate), so an evicted
 * object comes back with its counts.
 */
export class LimitObject {
  private readonly limits = new LocalLimits();

  constructor(private readonly state: DurableStateLike) {
    void state.blockConcurrencyWhile(async () => {
      const saved = await state.storage.get<[string, { n: number; t: number; expires: number | null }][]>(STORAGE_KEY);
      if (saved) this.limits.load(saved);
    });
  }

  async fetch(req: Request): Promise<Response> {
    let body: Op;
    try {
      body = (await req.json()) as Op;
    } catch {
      return new Response('bad request', { status: 400 });
    }
    let out: MaybePromise<unknown>;
    switch (body.op) {
      case 'count':
        out = this.limits.count(body.key, body.limit, body.windowS, body.sliding);
        break;
      case 'leaky':
        out = this.limits.leaky(body.key, body.rate, body.burst);
        break;
      case 'connIn':
        out = this.limits.connIn(body.key, body.max);
        break;
      case 'connOut':
        this.limits.connOut(body.key);
        out = null;
        break;
      default:
        return new Response('bad request', { status: 400 });
    }
    const entries = this.limits.dump();
    void (entries.length ? this.state.storage.put(STORAGE_KEY, entries) : this.state.storage.delete(STORAGE_KEY));
    return Response.json(out);
  }
}
