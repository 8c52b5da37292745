import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { writeFile } from "node:fs/promises";
import pRetry, { AbortError } from "p-retry";
import { signKore } from "../receive/kore-signature.ts";
import { signTwilio } from "../receive/twilio-signature.ts";
import { type GroundTruth, Rng } from "./fleet.ts";

// Where a simulated fleet goes: JSON-lines files plus its ground truth, or live signed
// deliveries to a receiver behaving like Twilio/KORE Event Streams.

type AnyIterable<T> = Iterable<T> | AsyncIterable<T>;

export type WriteProgress = { events: number; bytes: number };

/** Streams events as JSON lines, honouring backpressure, so memory stays flat for any count. */
export async function writeEventsJsonl(
  path: string,
  events: AnyIterable<unknown>,
  onProgress?: (p: WriteProgress) => void,
): Promise<WriteProgress> {
  const stream = createWriteStream(path, { encoding: "utf8" });
  const failed = new Promise<never>((_, reject) => stream.once("error", reject));
  failed.catch(() => {});
  const p: WriteProgress = { events: 0, bytes: 0 };
  // One write per ~64 kB instead of per event: per-write overhead dominates small lines.
  let chunk = "";
  const flush = async () => {
    if (chunk === "") return;
    const data = chunk;
    chunk = "";
    p.bytes += Buffer.byteLength(data);
    if (!stream.write(data)) await Promise.race([once(stream, "drain"), failed]);
    onProgress?.(p);
  };
  try {
    if (Symbol.iterator in events) {
      // A plain loop: for-await would add a promise round-trip per event to a sync generator.
      for (const e of events) {
        chunk += `${JSON.stringify(e)}\n`;
        p.events++;
        if (chunk.length >= 65_536) await flush();
      }
    } else {
      for await (const e of events) {
        chunk += `${JSON.stringify(e)}\n`;
        p.events++;
        if (chunk.length >= 65_536) await flush();
      }
    }
    await flush();
    stream.end();
    await Promise.race([once(stream, "finish"), failed]);
  } catch (err) {
    stream.destroy();
    throw err;
  }
  return p;
}

export type TruthJson = {
  customers: Record<string, string>;
  fleets: Record<string, string>;
  /** customer → ISO hour (bucket start) → bytes */
  customerHour: Record<string, Record<string, number>>;
  /** SIM → ISO hour (bucket start) → bytes */
  simHour: Record<string, Record<string, number>>;
  totalBytes: number;
  carriedBytes: number;
  events: number;
  billingEvents: number;
  duplicates: number;
  lostUpdates: number;
  sessions: number;
  from: string;
  to: string;
};

const isoHour = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

function hoursToJson(m: Map<string, Map<number, number>>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [k, hours] of m) {
    const h: Record<string, number> = {};
    for (const [b, v] of [...hours].sort((a, c) => a[0] - c[0])) h[isoHour(b)] = v;
    out[k] = h;
  }
  return out;
}

function hoursFromJson(
  o: Record<string, Record<string, number>>,
): Map<string, Map<number, number>> {
  const out = new Map<string, Map<number, number>>();
  for (const [k, hours] of Object.entries(o)) {
    out.set(k, new Map(Object.entries(hours).map(([iso, v]) => [Date.parse(iso), v])));
  }
  return out;
}

export function truthToJson(t: GroundTruth): TruthJson {
  return {
    customers: t.customers,
    fleets: t.fleets,
    customerHour: hoursToJson(t.customerHour),
    simHour: hoursToJson(t.simHour),
    totalBytes: t.totalBytes,
    carriedBytes: t.carriedBytes,
    events: t.events,
    billingEvents: t.billingEvents,
    duplicates: t.duplicates,
    lostUpdates: t.lostUpdates,
    sessions: t.sessions,
    from: new Date(t.from).toISOString(),
    to: new Date(t.to).toISOString(),
  };
}

/** Inverse of truthToJson, for checkers that load a truth file written earlier. */
export function truthFromJson(j: TruthJson): GroundTruth {
  return {
    customers: j.customers,
    fleets: j.fleets ?? {},
    customerHour: hoursFromJson(j.customerHour),
    simHour: hoursFromJson(j.simHour),
    totalBytes: j.totalBytes,
    carriedBytes: j.carriedBytes ?? j.totalBytes,
    events: j.events,
    billingEvents: j.billingEvents,
    duplicates: j.duplicates ?? 0,
    lostUpdates: j.lostUpdates ?? 0,
    sessions: j.sessions ?? 0,
    from: Date.parse(j.from),
    to: Date.parse(j.to),
  };
}

export async function writeTruthJson(path: string, t: GroundTruth): Promise<void> {
  await writeFile(path, `${JSON.stringify(truthToJson(t), null, 2)}\n`);
}

/** The customer mapping in the form simmeter imports: sim_sid,stripe_customer_id. */
export async function writeCustomersCsv(
  path: string,
  customers: Record<string, string>,
): Promise<void> {
  const lines = ["sim_sid,stripe_customer_id"];
  for (const [sim, cus] of Object.entries(customers)) lines.push(`${sim},${cus}`);
  await writeFile(path, `${lines.join("\n")}\n`);
}

// ---------------------------------------------------------------------------------------------
// Live deliveries.

export type Signing =
  | { kind: "twilio"; authToken: string; publicUrl: string }
  | { kind: "kore"; secret: string; publicUrl: string }
  | { kind: "none" };

export type SendProgress = {
  deliveries: number;
  events: number;
  retries: number;
  rejected4xx: number;
  failed: number;
  inFlight: number;
};

export type LatencySummary = { count: number; p50: number; p99: number; max: number };

export type SendResult = {
  /** deliveries answered 2xx */
  deliveries: number;
  /** events in deliveries answered 2xx */
  events: number;
  retries: number;
  /** deliveries answered 4xx (other than 429): never retried, so their events are lost */
  rejected4xx: number;
  rejectedEvents: number;
  /** deliveries that still failed after maxRetries retries */
  failed: number;
  failedEvents: number;
  /** per attempt, ms */
  latenciesMs: LatencySummary;
  statusCounts: Record<string, number>;
};

export type SendOptions = {
  url: string;
  events: AnyIterable<unknown>;
  /** events per delivery, drawn uniformly in [batchMin, batchMax]; default 1..1 */
  batchMin?: number;
  batchMax?: number;
  signing: Signing;
  /** deliveries started per second; unpaced when unset */
  ratePerSecond?: number;
  concurrency: number;
  /** default 10 */
  maxRetries?: number;
  /**
   * first backoff; doubles per retry, jittered between 50% and 100%, at most 30 s (p-retry);
   * default 250 ms
   */
  retryBaseMs?: number;
  /** default 5000: Event Streams gives up on an answer after 5 s and retries */
  timeoutMs?: number;
  /** seeds batch sizes and KORE idempotency tokens; default 1 */
  seed?: number;
  onProgress?: (p: SendProgress) => void;
  /** for tests */
  fetch?: typeof fetch;
};

/** log-spaced histogram (1 % resolution): percentiles in constant memory for any count */
class LatencyHistogram {
  private counts = new Map<number, number>();
  private n = 0;
  private maxMs = 0;

  add(ms: number): void {
    const key = Math.round(Math.log(Math.max(ms, 0.01)) * 100);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.n++;
    this.maxMs = Math.max(this.maxMs, ms);
  }

  summary(): LatencySummary {
    const keys = [...this.counts.keys()].sort((a, b) => a - b);
    const at = (q: number) => {
      if (this.n === 0) return 0;
      const rank = Math.ceil(q * this.n);
      let seen = 0;
      for (const k of keys) {
        seen += this.counts.get(k) ?? 0;
        if (seen >= rank) return Math.round(Math.exp(k / 100) * 100) / 100;
      }
      return this.maxMs;
    };
    return { count: this.n, p50: at(0.5), p99: at(0.99), max: Math.round(this.maxMs * 100) / 100 };
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

type Prepared = { target: string; headers: Record<string, string>; body: string };

function prepare(url: string, signing: Signing, body: string, ids: Rng): Prepared {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (signing.kind === "twilio") {
    const signed = signTwilio(signing.authToken, signing.publicUrl, body);
    // The receiver rebuilds the signed URL from PUBLIC_URL plus the query it received, so the
    // query must travel unchanged even when url (e.g. localhost) differs from publicUrl.
    const query = signed.url.slice(signed.url.indexOf("?") + 1);
    const q = url.indexOf("?");
    const target = `${q === -1 ? url : url.slice(0, q)}?${query}`;
    headers["x-twilio-signature"] = signed.signature;
    return { target, headers, body };
  }
  if (signing.kind === "kore") {
    headers["kore-signature"] = signKore(signing.secret, "POST", signing.publicUrl, body);
    headers["kore-idempotency-token"] = ids.hex(4);
    headers["user-agent"] = "KoreProxy/1.1";
  }
  return { target: url, headers, body };
}

/** Retryable the way Event Streams treats it: 5xx, 429, timeouts, connection errors. */
function retryable(status: number | null): boolean {
  return status === null || status >= 500 || status === 429 || status === 408;
}

/** A delivery answered with a retryable status (or none): p-retry sends it again. */
class Unanswered extends Error {
  override name = "Unanswered";
}

/** A delivery answered 4xx (not 408/429): never retried, like Twilio (inside an AbortError). */
class Rejected extends Error {
  override name = "Rejected";
}

/**
 * Sends events as Event Streams would: JSON-array deliveries of 1..K events, signed, retried
 * with exponential backoff on 5xx/429/timeouts/connection errors, never retried on other 4xx
 * (counted as lost, like Twilio).
 */
export async function sendDeliveries(o: SendOptions): Promise<SendResult> {
  const batchMin = Math.max(1, o.batchMin ?? 1);
  const batchMax = Math.max(batchMin, o.batchMax ?? batchMin);
  const maxRetries = o.maxRetries ?? 10;
  const retryBase = o.retryBaseMs ?? 250;
  const timeoutMs = o.timeoutMs ?? 5000;
  const doFetch = o.fetch ?? fetch;
  const rng = new Rng(o.seed ?? 1, 0x51d);
  const ids = new Rng(o.seed ?? 1, 0x51e);
  const hist = new LatencyHistogram();
  const result: SendResult = {
    deliveries: 0,
    events: 0,
    retries: 0,
    rejected4xx: 0,
    rejectedEvents: 0,
    failed: 0,
    failedEvents: 0,
    latenciesMs: { count: 0, p50: 0, p99: 0, max: 0 },
    statusCounts: {},
  };
  let inFlight = 0;
  const progress = () =>
    o.onProgress?.({
      deliveries: result.deliveries,
      events: result.events,
      retries: result.retries,
      rejected4xx: result.rejected4xx,
      failed: result.failed,
      inFlight,
    });

  const it =
    Symbol.asyncIterator in o.events
      ? (o.events as AsyncIterable<unknown>)[Symbol.asyncIterator]()
      : (o.events as Iterable<unknown>)[Symbol.iterator]();
  let exhausted = false;
  // Batches are cut one at a time so every event lands in exactly one delivery, in order.
  let lock: Promise<unknown> = Promise.resolve();
  const takeBatch = (): Promise<unknown[] | null> => {
    const run = lock.then(async () => {
      if (exhausted) return null;
      const size = rng.int(batchMin, batchMax);
      const batch: unknown[] = [];
      while (batch.length < size) {
        const r = await it.next();
        if (r.done) {
          exhausted = true;
          break;
        }
        batch.push(r.value);
      }
      return batch.length > 0 ? batch : null;
    });
    lock = run.catch(() => {});
    return run;
  };

  let nextSlot = 0;
  const pace = async () => {
    if (!o.ratePerSecond || o.ratePerSecond <= 0) return;
    const now = performance.now();
    nextSlot = Math.max(nextSlot, now);
    const wait = nextSlot - now;
    nextSlot += 1000 / o.ratePerSecond;
    if (wait > 0) await sleep(wait);
  };

  const attempt = async (p: Prepared): Promise<number | null> => {
    const started = performance.now();
    try {
      const res = await doFetch(p.target, {
        method: "POST",
        headers: p.headers,
        body: p.body,
        signal: AbortSignal.timeout(timeoutMs),
      });
      // Drain the body so the connection goes back to the pool.
      await res.arrayBuffer().catch(() => undefined);
      return res.status;
    } catch {
      return null;
    } finally {
      hist.add(performance.now() - started);
    }
  };

  const deliver = async (batch: unknown[]) => {
    const p = prepare(o.url, o.signing, JSON.stringify(batch), ids);
    try {
      await pRetry(
        async () => {
          const status = await attempt(p);
          const label = status === null ? "error" : String(status);
          result.statusCounts[label] = (result.statusCounts[label] ?? 0) + 1;
          if (status !== null && status >= 200 && status < 300) return;
          if (!retryable(status)) throw new AbortError(new Rejected(label));
          throw new Unanswered(label);
        },
        {
          retries: maxRetries,
          // p-retry's delay is minTimeout × 2^n × a random 1..2, at most maxTimeout.
          minTimeout: retryBase / 2,
          factor: 2,
          maxTimeout: 30_000,
          randomize: true,
          shouldRetry: ({ error }) => error instanceof Unanswered,
          onFailedAttempt: ({ error, retriesLeft }) => {
            if (error instanceof Unanswered && retriesLeft > 0) result.retries++;
          },
        },
      );
      result.deliveries++;
      result.events += batch.length;
    } catch (err) {
      if (err instanceof Rejected) {
        result.rejected4xx++;
        result.rejectedEvents += batch.length;
      } else if (err instanceof Unanswered) {
        // still unanswered after maxRetries retries
        result.failed++;
        result.failedEvents += batch.length;
      } else throw err;
    }
  };

  const worker = async () => {
    for (;;) {
      const batch = await takeBatch();
      if (!batch) return;
      await pace();
      inFlight++;
      try {
        await deliver(batch);
      } finally {
        inFlight--;
      }
      progress();
    }
  };

  // A pool of workers that each pull the next batch when free, not p-limit: p-limit takes tasks
  // already made, so it would read the whole (possibly endless, async) event source ahead of the
  // sends; pulling keeps memory flat and cuts batches in order (docs/adr/0009-retries-and-pools.md).
  await Promise.all(Array.from({ length: Math.max(1, o.concurrency) }, () => worker()));
  result.latenciesMs = hist.summary();
  return result;
}
