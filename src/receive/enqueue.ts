import type { Delivery, IngestJobData } from "../ingest/job.ts";

type Waiter = {
  delivery: Delivery;
  events: number;
  resolve: () => void;
  reject: (e: unknown) => void;
};

export type GroupEnqueuer = {
  /** `events` weighs the delivery against maxEvents (a job should stay a few MB at most) */
  enqueue: (delivery: Delivery, events: number) => Promise<void>;
  /** resolves when every accepted delivery has been written or failed */
  drain: () => Promise<void>;
};

/**
 * Group commit: requests that arrive while a write is in flight share the next job, so one atomic
 * queue add (one Lua script) carries many deliveries. Under light load a job holds one delivery
 * and adds no delay; under heavy load jobs grow up to maxEvents. Every caller is answered only
 * after its own delivery is in Redis.
 */
export function createGroupEnqueuer(
  write: (data: IngestJobData) => Promise<void>,
  opts: { maxEvents: number; maxParallel?: number; onBatch?: (deliveries: number) => void },
): GroupEnqueuer {
  const maxParallel = opts.maxParallel ?? 4;
  const waiting: Waiter[] = [];
  let waitingEvents = 0;
  let inFlight = 0;
  let idle: (() => void)[] = [];

  const take = (): Waiter[] => {
    const out: Waiter[] = [];
    let events = 0;
    while (waiting.length > 0) {
      const next = waiting[0] as Waiter;
      if (out.length > 0 && events + next.events > opts.maxEvents) break;
      out.push(next);
      events += next.events;
      waiting.shift();
    }
    waitingEvents -= events;
    return out;
  };

  const pump = () => {
    while (
      waiting.length > 0 &&
      (inFlight === 0 || (waitingEvents >= opts.maxEvents && inFlight < maxParallel))
    ) {
      const batch = take();
      inFlight++;
      opts.onBatch?.(batch.length);
      write({ v: 1, deliveries: batch.map((w) => w.delivery) })
        .then(
          () => {
            for (const w of batch) w.resolve();
          },
          (err: unknown) => {
            for (const w of batch) w.reject(err);
          },
        )
        .finally(() => {
          inFlight--;
          pump();
          if (inFlight === 0 && waiting.length === 0) {
            const cbs = idle;
            idle = [];
            for (const cb of cbs) cb();
          }
        });
    }
  };

  return {
    enqueue(delivery, weight) {
      return new Promise<void>((resolve, reject) => {
        const events = Math.max(1, weight);
        waiting.push({ delivery, events, resolve, reject });
        waitingEvents += events;
        pump();
      });
    },
    drain() {
      if (inFlight === 0 && waiting.length === 0) return Promise.resolve();
      return new Promise<void>((resolve) => idle.push(resolve));
    },
  };
}
