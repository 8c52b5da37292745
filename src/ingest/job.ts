// The one job type the receiver enqueues: a group of deliveries, written to Redis in one atomic
// add. Concurrent requests share a job (group commit), so the queue costs one job per flush, not
// one per event or per request.

export type DeliverySource = "twilio" | "kore" | "unsigned" | "replay";

export type Delivery = {
  /** unique per delivery; positions inside it identify quarantined events across job re-runs */
  id: string;
  receivedAt: number;
  source: DeliverySource;
  /** the CloudEvents of the body, unvalidated (the worker validates and quarantines) */
  events?: unknown[];
  /** an authenticated body that could not be split into events, kept for quarantine */
  unparsable?: { raw: string; error: string };
};

export type IngestJobData = { v: 1; deliveries: Delivery[] };

export const INGEST_QUEUE = "ingest";
export const INGEST_JOB = "deliveries";

export function countEvents(data: IngestJobData): number {
  let n = 0;
  for (const d of data.deliveries) n += d.events?.length ?? 1;
  return n;
}
