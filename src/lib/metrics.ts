import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** One registry per process; roles add what they own. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "simmeter_process_" });
  return {
    registry,
    deliveries: new Counter({
      name: "simmeter_deliveries_total",
      help: "Webhook deliveries by outcome",
      labelNames: ["outcome", "source"] as const,
      registers: [registry],
    }),
    receivedEvents: new Counter({
      name: "simmeter_received_events_total",
      help: "Events accepted by the receiver by CloudEvent type suffix",
      labelNames: ["type"] as const,
      registers: [registry],
    }),
    ingestedEvents: new Counter({
      name: "simmeter_ingested_events_total",
      help: "Events processed by the worker by outcome and kind",
      labelNames: ["outcome", "kind"] as const,
      registers: [registry],
    }),
    quarantined: new Counter({
      name: "simmeter_quarantined_events_total",
      help: "Authenticated events that failed validation and were quarantined",
      registers: [registry],
    }),
    ingestLag: new Histogram({
      name: "simmeter_ingest_lag_seconds",
      help: "Event time to counted in SQLite",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400],
      registers: [registry],
    }),
    enqueueBatch: new Histogram({
      name: "simmeter_enqueue_batch_deliveries",
      help: "Deliveries grouped into one queue job",
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000],
      registers: [registry],
    }),
    reportCalls: new Counter({
      name: "simmeter_stripe_calls_total",
      help: "Stripe meter event calls by outcome",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    reportFailedRows: new Gauge({
      name: "simmeter_report_failed_rows",
      help: "Outbox rows stopped by a permanent Stripe error (see simmeter report --status)",
      registers: [registry],
    }),
    unbilledBytes: new Gauge({
      name: "simmeter_unbilled_bytes",
      help: "Counted bytes held from Stripe because no invoice would carry them yet, by reason: no_subscription, ambiguous_subscription, stale_period (sent once possible)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    reportLastSuccess: new Gauge({
      name: "simmeter_report_last_success_timestamp_seconds",
      help: "Unix time of the last scheduled report run that finished without a fatal error (alert when it stops moving)",
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
