// The one job type the receiver enqueues: a group of deliveries, written to Redis in one atomic
// add. Concurrent requests share a job (group commit), so the queue costs one job per flush, not
// one per event or per request.
//
// Deliveries travel as the text that arrived, not as parsed values: the worker validates exactly
// what the sender sent. (Re-serialising parsed JSON turns 1e400 into null and throws on deeply
// nested input, which would bill invalid events or refuse a delivery.)

export type DeliverySource = "twilio" | "kore" | "unsigned" | "replay";

export type Delivery = {
  /** unique per delivery; positions inside it identify quarantined events across job re-runs */
  id: string;
  receivedAt: number;
  source: DeliverySource;
  /** a webhook body: a JSON array of CloudEvents or one CloudEvent */
  body?: string;
  /** one CloudEvent per entry, as text (simmeter replay of JSON lines) */
  lines?: string[];
  /** already-parsed CloudEvents (programmatic callers: tests, benchmarks) */
  events?: unknown[];
};

export type IngestJobData = { v: 1; deliveries: Delivery[] };

export const INGEST_QUEUE = "ingest";
export const INGEST_JOB = "deliveries";
/**
 * a job `simmeter requeue` adds: the worker counts it in a transaction of its own (never grouped
 * with others, src/ingest/commit-group.ts), as requeue reads each job's own result
 */
export const REQUEUED_JOB = "requeued";
