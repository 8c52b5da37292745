import type { Queue } from "bullmq";
import { Gauge, type Registry } from "prom-client";

/** The ingest queue's job states reported, `failed` being jobs that used up their attempts. */
export const QUEUE_STATES = ["waiting", "active", "delayed", "failed"] as const;

/**
 * Longest a scrape waits for Redis. A worker's connection retries forever (BullMQ needs
 * maxRetriesPerRequest: null), so without a bound a scrape would hang while Redis is down.
 */
export const QUEUE_SCRAPE_TIMEOUT_MS = 1000;

/**
 * simmeter_queue_depth{state}, read from BullMQ at scrape time so it is right whichever process
 * runs the worker. Register it once per /metrics exposition: in `simmeter start` either thread,
 * not both (the host would add the two copies up). While Redis does not answer the gauge keeps
 * its last values (/readyz reports the outage), and at most one count is in flight.
 */
export function registerQueueGauges(
  registry: Registry,
  queue: Pick<Queue, "getJobCounts">,
  opts: { timeoutMs?: number } = {},
): void {
  const timeoutMs = opts.timeoutMs ?? QUEUE_SCRAPE_TIMEOUT_MS;
  let inFlight: Promise<Record<string, number> | null> | null = null;
  new Gauge({
    name: "simmeter_queue_depth",
    help: "Ingest jobs by state: waiting, active, delayed, and failed (used up their attempts, about 1 h of retries: simmeter jobs failed, simmeter jobs retry)",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      inFlight ??= queue
        .getJobCounts(...QUEUE_STATES)
        .catch(() => null)
        .finally(() => {
          inFlight = null;
        });
      let timer: NodeJS.Timeout | undefined;
      const counts = await Promise.race([
        inFlight,
        new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (!counts) return;
      for (const state of QUEUE_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
}
