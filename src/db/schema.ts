import {
  index,
  integer,
  primaryKey,
  sqliteTable,
  text,
  uniqueIndex,
} from "drizzle-orm/sqlite-core";

// snake_case in SQL, camelCase in TS. Times are epoch milliseconds (integers); bytes are integers.

/** Durable dedupe: one row per event_sid ever counted (the source of truth for exactly-once). */
export const seenEvents = sqliteTable(
  "seen_events",
  {
    eventSid: text("event_sid").primaryKey(),
    eventTs: integer("event_ts").notNull(),
    kind: text("kind").notNull(),
    receivedAt: integer("received_at").notNull(),
  },
  (t) => [
    // Serves retention pruning: DELETE ... WHERE event_ts < ?
    index("seen_events_event_ts_idx").on(t.eventTs),
  ],
);

/** SIMs seen in events, for mapping ICCIDs and fleets to usage. */
export const sims = sqliteTable("sims", {
  simSid: text("sim_sid").primaryKey(),
  iccid: text("iccid").notNull(),
  fleetSid: text("fleet_sid"),
  /** sim_unique_name of the newest event that had one (for per-SIM statements) */
  uniqueName: text("unique_name"),
  accountSid: text("account_sid").notNull(),
  firstSeenAt: integer("first_seen_at").notNull(),
  lastEventAt: integer("last_event_at").notNull(),
});

/** One row per data session that produced a billing reading. */
export const sessions = sqliteTable(
  "sessions",
  {
    sessionSid: text("session_sid").primaryKey(),
    simSid: text("sim_sid").notNull(),
    startTime: integer("start_time"),
    endTime: integer("end_time"),
    totalBytes: integer("total_bytes").notNull().default(0),
    windowSumBytes: integer("window_sum_bytes").notNull().default(0),
    basis: text("basis", { enum: ["cumulative", "window"] })
      .notNull()
      .default("cumulative"),
    readingCount: integer("reading_count").notNull().default(0),
    /**
     * JSON {hourStartMs: bytes}: what this session contributes to each hour, so a late reading can
     * correct exactly the hours it changes. Kept in the session row (one page write per event
     * instead of a second table's).
     */
    buckets: text("buckets").notNull().default("{}"),
    lastReadingAt: integer("last_reading_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    // Serves retention pruning of finished sessions.
    index("sessions_last_reading_at_idx").on(t.lastReadingAt),
  ],
);

/** The readings accounting needs: (t, cumulative) per billing event, clustered by session. */
export const readings = sqliteTable(
  "readings",
  {
    sessionSid: text("session_sid").notNull(),
    t: integer("t").notNull(),
    eventSid: text("event_sid").notNull(),
    cumulative: integer("cumulative"),
    windowBytes: integer("window_bytes"),
    windowStart: integer("window_start"),
    ended: integer("ended", { mode: "boolean" }).notNull(),
  },
  (t) => [
    // Serves loading one session's readings for re-attribution, in time order, with no second
    // index to maintain (event_sid is already unique through seen_events).
    primaryKey({ columns: [t.sessionSid, t.t, t.eventSid] }),
  ],
);

/**
 * Per SIM per hour usage: the read model for `usage` and the reporter (the sum of the sessions'
 * buckets, kept materialised so reads never scan sessions). Keyed hour first: ingest writes the
 * current hours, so inserts stay on a few pages, and the reporter reads one hour at a time.
 */
export const usageHourly = sqliteTable(
  "usage_hourly",
  {
    hour: integer("hour").notNull(),
    simSid: text("sim_sid").notNull(),
    bytes: integer("bytes").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.hour, t.simSid] }),
    // Serves per-SIM usage queries and the reporter's "hours of re-assigned SIMs". Written only
    // when a SIM's first bytes of an hour arrive, not on every update of the row.
    index("usage_hourly_sim_idx").on(t.simSid, t.hour),
  ],
);

/** Non-billing events per SIM per UTC day and type: makes rejection storms visible. */
export const eventCounts = sqliteTable(
  "event_counts",
  {
    simSid: text("sim_sid").notNull(),
    day: integer("day").notNull(),
    kind: text("kind").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.simSid, t.day, t.kind] })],
);

/** Authenticated but unusable events, kept verbatim for inspection. */
export const quarantine = sqliteTable(
  "quarantine",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    receivedAt: integer("received_at").notNull(),
    source: text("source").notNull(),
    deliveryId: text("delivery_id").notNull(),
    /** index of the event in its delivery; -1 for a body that could not be split into events */
    position: integer("position").notNull(),
    eventSid: text("event_sid"),
    reason: text("reason").notNull(),
    raw: text("raw").notNull(),
    /** when an operator last put the event back on the ingest queue (simmeter quarantine requeue) */
    requeuedAt: integer("requeued_at"),
    requeues: integer("requeues").notNull().default(0),
  },
  (t) => [
    // A re-run job (crash, stall) must not quarantine the same event twice.
    uniqueIndex("quarantine_delivery_pos_idx").on(t.deliveryId, t.position),
  ],
);

/** Accounting anomalies (never crash the worker; visible to operators). */
export const anomalies = sqliteTable(
  "anomalies",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    sessionSid: text("session_sid").notNull(),
    eventSid: text("event_sid").notNull(),
    kind: text("kind").notNull(),
    detail: text("detail").notNull(),
    detectedAt: integer("detected_at").notNull(),
  },
  (t) => [
    // One row per anomaly, however often the session is re-attributed.
    uniqueIndex("anomalies_unique_idx").on(t.sessionSid, t.eventSid, t.kind),
  ],
);

/** Small key/value state: change sequence, reporter watermark. */
export const meta = sqliteTable("meta", {
  key: text("key").primaryKey(),
  value: integer("value").notNull(),
});

/** Who pays for a SIM, ICCID or fleet, from a point in time on. */
export const assignments = sqliteTable(
  "assignments",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    targetType: text("target_type", { enum: ["sim", "iccid", "fleet"] }).notNull(),
    targetId: text("target_id").notNull(),
    customerId: text("customer_id").notNull(),
    effectiveFrom: integer("effective_from").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    // Serves resolving a target's assignment history in time order.
    index("assignments_target_idx").on(t.targetType, t.targetId, t.effectiveFrom),
  ],
);

/**
 * The reporting outbox: one row per meter event, written before the Stripe call. Rows in state
 * pending or sent count as reported, so a crash between the call and the commit re-sends the same
 * identifier (which Stripe refuses as a duplicate) instead of a new amount.
 */
export const meterReports = sqliteTable(
  "meter_reports",
  {
    identifier: text("identifier").primaryKey(),
    customerId: text("customer_id").notNull(),
    hour: integer("hour").notNull(),
    seq: integer("seq").notNull(),
    value: integer("value").notNull(),
    timestamp: integer("timestamp").notNull(),
    late: integer("late", { mode: "boolean" }).notNull(),
    /**
     * usage: a meter event simmeter sends. observed: never sent; records what `reconcile --repair`
     * found Stripe to hold beyond (or short of) the sent rows, so the planner sends the difference
     * under a new identifier.
     */
    kind: text("kind", { enum: ["usage", "observed"] })
      .notNull()
      .default("usage"),
    /**
     * pending → sent | failed; superseded: never sent, and replaced by a new row (new identifier)
     * because the invoice its stamp pointed at closed before any call was made.
     */
    state: text("state", { enum: ["pending", "sent", "failed", "superseded"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    /**
     * 1 from just before a call whose outcome is unknown (a timeout, a 5xx, a crash mid-call) may
     * have let Stripe record the event: such a row is never superseded, only re-sent as it is.
     */
    inDoubt: integer("in_doubt", { mode: "boolean" }).notNull().default(false),
    /** when the first call that left the row in doubt began (Stripe dedupes identifiers ≥ 24 h) */
    firstCallAt: integer("first_call_at"),
    lastError: text("last_error"),
    createdAt: integer("created_at").notNull(),
    sentAt: integer("sent_at"),
  },
  (t) => [
    uniqueIndex("meter_reports_customer_hour_seq_idx").on(t.customerId, t.hour, t.seq),
    // Serves the planner's "what is reported for this hour" (one hour at a time, all customers):
    // without it every dirty hour scanned the whole outbox.
    index("meter_reports_hour_idx").on(t.hour, t.customerId),
    // Serves the sender's scan for pending rows.
    index("meter_reports_state_idx").on(t.state),
  ],
);

export type SeenEvent = typeof seenEvents.$inferSelect;
export type Sim = typeof sims.$inferSelect;
export type Session = typeof sessions.$inferSelect;
export type ReadingRow = typeof readings.$inferSelect;
export type UsageHourly = typeof usageHourly.$inferSelect;
export type QuarantineRow = typeof quarantine.$inferSelect;
export type AnomalyRow = typeof anomalies.$inferSelect;
export type Assignment = typeof assignments.$inferSelect;
export type MeterReport = typeof meterReports.$inferSelect;

/**
 * Hours whose reported totals may differ from counted ones. Ingest adds every hour it changes and
 * the reporter adds the hours of SIMs whose assignment changed; an hour leaves only when every
 * customer's difference for it has an outbox row.
 */
export const reportDirtyHours = sqliteTable("report_dirty_hours", {
  hour: integer("hour").primaryKey(),
});

/**
 * Fleet membership over time: the fleets each SIM's events named, per UTC hour. An hour's fleet
 * (and so its fleet customer) is decided by what the events of that time said, never by the SIM's
 * current fleet (see src/customers/resolve.ts). Events without a (valid) fleet_sid record nothing:
 * the field may be absent, which says nothing about membership.
 */
export const simFleetHours = sqliteTable(
  "sim_fleet_hours",
  {
    simSid: text("sim_sid").notNull(),
    hour: integer("hour").notNull(),
    fleetSid: text("fleet_sid").notNull(),
  },
  (t) => [
    // Serves one SIM's membership history in time order.
    primaryKey({ columns: [t.simSid, t.hour, t.fleetSid] }),
    // Serves "which SIMs were ever in this fleet" when a fleet assignment changes.
    index("sim_fleet_hours_fleet_idx").on(t.fleetSid, t.simSid),
  ],
);

/**
 * SIMs whose customer history changed (a fleet move seen by ingest): the planner re-checks every
 * hour of these SIMs, as the first customer covering them may now exist.
 */
export const reportDirtySims = sqliteTable("report_dirty_sims", {
  simSid: text("sim_sid").primaryKey(),
});

export type SimFleetHour = typeof simFleetHours.$inferSelect;

/**
 * Each customer's metered subscription item on the configured meter, as last looked up in Stripe
 * (src/billing/subscriptions.ts): the periods and the previous period's invoice decide where a
 * delta is stamped. Times are epoch ms.
 */
export const billingCustomers = sqliteTable("billing_customers", {
  customerId: text("customer_id").primaryKey(),
  state: text("state", { enum: ["ok", "none", "ambiguous"] }).notNull(),
  detail: text("detail"),
  subscriptionId: text("subscription_id"),
  itemId: text("item_id"),
  priceId: text("price_id"),
  periodStart: integer("period_start"),
  periodEnd: integer("period_end"),
  prevStart: integer("prev_start"),
  prevEnd: integer("prev_end"),
  prevInvoiceId: text("prev_invoice_id"),
  prevInvoiceStatus: text("prev_invoice_status"),
  prevFinalizesAt: integer("prev_finalizes_at"),
  prevFinalizedAt: integer("prev_finalized_at"),
  refreshedAt: integer("refreshed_at").notNull(),
});

export type BillingCustomer = typeof billingCustomers.$inferSelect;
