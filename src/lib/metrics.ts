import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/**
 * Which part of simmeter this process (or thread) runs: `receiver` (simmeter serve, the main
 * thread of simmeter start), `worker` (simmeter work, the worker thread of simmeter start) or
 * `all` (both in one registry: CLI commands and tests).
 */
export type MetricsRole = "receiver" | "worker" | "all";

/**
 * Whether a family is one of prom-client's default metrics (process_*, nodejs_*). They describe
 * the process (CPU, RSS, file descriptors) or one thread's V8 isolate and event loop, so when two
 * threads' registries are merged into one /metrics answer only one thread's copy may be kept.
 */
export function isDefaultMetric(name: string): boolean {
  return name.startsWith("process_") || name.startsWith("nodejs_");
}

/**
 * One registry per process (or worker thread). Every metric object exists whatever the role, so
 * every call site type-checks and may update it; only the families the role moves are registered,
 * so /metrics shows a receiver's families on `serve` and a worker's on `work`. The default
 * metrics are prom-client's, unprefixed (process_resident_memory_bytes, nodejs_eventloop_lag_p99_seconds…)
 * as standard Node.js dashboards expect. docs/observability.md lists every family.
 */
export function createMetrics(role: MetricsRole = "all") {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const receiver = role === "receiver" || role === "all" ? [registry] : [];
  const worker = role === "worker" || role === "all" ? [registry] : [];
  // Both roles read Redis's eviction policy on their own connection.
  const both = [registry];
  return {
    registry,
    deliveries: new Counter({
      name: "simmeter_deliveries_total",
      help: "Webhook deliveries by outcome (accepted, quarantined, test, unauthenticated = 401, forbidden = 403, unavailable = 503) and source (twilio, kore: the signature that authenticated it; unsigned: accepted with ALLOW_UNSIGNED; unknown: not authenticated)",
      labelNames: ["outcome", "source"] as const,
      registers: receiver,
    }),
    receivedEvents: new Counter({
      name: "simmeter_received_events_total",
      help: "Events accepted by the receiver by CloudEvent type suffix",
      labelNames: ["type"] as const,
      registers: receiver,
    }),
    enqueueBatch: new Histogram({
      name: "simmeter_enqueue_batch_deliveries",
      help: "Deliveries grouped into one queue job",
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000],
      registers: receiver,
    }),
    ingestedEvents: new Counter({
      name: "simmeter_ingested_events_total",
      help: "Events processed by the worker by outcome (counted, duplicate, quarantined) and kind",
      labelNames: ["outcome", "kind"] as const,
      registers: worker,
    }),
    quarantined: new Counter({
      name: "simmeter_quarantined_events_total",
      help: "Authenticated events that failed validation and were quarantined by this process (simmeter quarantine)",
      registers: worker,
    }),
    commitJobs: new Histogram({
      name: "simmeter_ingest_commit_jobs",
      help: "Queue jobs counted in one ledger transaction (worker group commit, WORKER_COMMIT_JOBS)",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers: worker,
    }),
    ingestLag: new Histogram({
      name: "simmeter_ingest_lag_seconds",
      help: "Event time to counted in SQLite",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400],
      registers: worker,
    }),
    reportCalls: new Counter({
      name: "simmeter_stripe_calls_total",
      help: "Stripe meter event calls by outcome",
      labelNames: ["outcome"] as const,
      registers: worker,
    }),
    reportFailedRows: new Gauge({
      name: "simmeter_report_failed_rows",
      help: "Outbox rows stopped by a permanent Stripe error, as of the last report run (simmeter report --status; simmeter report --retry-failed once fixed)",
      registers: worker,
    }),
    unbilledBytes: new Gauge({
      name: "simmeter_unbilled_bytes",
      help: "Counted bytes held from Stripe because no invoice would carry them yet, by reason: no_subscription, ambiguous_subscription, stale_period (sent once possible)",
      labelNames: ["reason"] as const,
      registers: worker,
    }),
    reportLastSuccess: new Gauge({
      name: "simmeter_report_last_success_timestamp_seconds",
      help: "Unix time of the last scheduled report run that finished without a fatal error; 0 before the first (alert when it stops moving)",
      registers: worker,
    }),
    reportInterval: new Gauge({
      name: "simmeter_report_interval_seconds",
      help: "REPORT_INTERVAL_SECONDS of the reporter in this process; 0 when reporting is off (no STRIPE_SECRET_KEY)",
      registers: worker,
    }),
    redisNoeviction: new Gauge({
      name: "simmeter_redis_maxmemory_policy_ok",
      help: "1 when Redis runs with maxmemory-policy noeviction, 0 otherwise (BullMQ loses queued deliveries when Redis evicts keys), by connection (producer: the receiver's, worker: the worker's); absent until the policy could be read",
      labelNames: ["connection"] as const,
      registers: both,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
