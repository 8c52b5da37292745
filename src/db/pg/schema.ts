// The PostgreSQL ledger schema (docs/design/postgres-ledger.md §5, Appendix A): the same table,
// column, key and index names as src/db/schema.ts (test/unit/schema-parity.test.ts checks), with
// PostgreSQL types: bigint for epoch-ms times, bytes and meta values, boolean for flags, identity
// ids, and meter_reports.row_id (SQLite's implicit rowid, made explicit).
// Migrations: npm run db:generate writes drizzle/pg/ from this file (drizzle.pg.config.ts).
import {
  bigint,
  boolean,
  index,
  integer,
  pgTable,
  primaryKey,
  text,
  uniqueIndex,
} from "drizzle-orm/pg-core";

// Epoch-ms times, bytes and meta values are bigint in mode "number" (the int8 parser in
// src/db/pg/client.ts refuses values beyond 2^53 - 1 instead of rounding them).
const ms = (name: string) => bigint(name, { mode: "number" });
const bytes = (name: string) => bigint(name, { mode: "number" });
const id = () => bigint("id", { mode: "number" }).primaryKey().generatedByDefaultAsIdentity();

export const seenEvents = pgTable(
  "seen_events",
  {
    eventSid: text("event_sid").primaryKey(),
    eventTs: ms("event_ts").notNull(),
    kind: text("kind").notNull(),
    receivedAt: ms("received_at").notNull(),
  },
  (t) => [index("seen_events_event_ts_idx").on(t.eventTs)],
);

export const sims = pgTable("sims", {
  simSid: text("sim_sid").primaryKey(),
  iccid: text("iccid").notNull(),
  fleetSid: text("fleet_sid"),
  uniqueName: text("unique_name"),
  accountSid: text("account_sid").notNull(),
  firstSeenAt: ms("first_seen_at").notNull(),
  lastEventAt: ms("last_event_at").notNull(),
});

export const sessions = pgTable(
  "sessions",
  {
    sessionSid: text("session_sid").primaryKey(),
    simSid: text("sim_sid").notNull(),
    startTime: ms("start_time"),
    endTime: ms("end_time"),
    totalBytes: bytes("total_bytes").notNull().default(0),
    windowSumBytes: bytes("window_sum_bytes").notNull().default(0),
    basis: text("basis", { enum: ["cumulative", "window"] })
      .notNull()
      .default("cumulative"),
    readingCount: integer("reading_count").notNull().default(0),
    buckets: text("buckets").notNull().default("{}"),
    lastReadingAt: ms("last_reading_at").notNull(),
    updatedAt: ms("updated_at").notNull(),
  },
  (t) => [index("sessions_last_reading_at_idx").on(t.lastReadingAt)],
);

export const readings = pgTable(
  "readings",
  {
    sessionSid: text("session_sid").notNull(),
    t: ms("t").notNull(),
    eventSid: text("event_sid").notNull(),
    cumulative: bytes("cumulative"),
    windowBytes: bytes("window_bytes"),
    windowStart: ms("window_start"),
    ended: boolean("ended").notNull(),
  },
  (t) => [primaryKey({ columns: [t.sessionSid, t.t, t.eventSid] })],
);

export const usageHourly = pgTable(
  "usage_hourly",
  {
    hour: ms("hour").notNull(),
    simSid: text("sim_sid").notNull(),
    bytes: bytes("bytes").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.hour, t.simSid] }),
    index("usage_hourly_sim_idx").on(t.simSid, t.hour),
  ],
);

export const eventCounts = pgTable(
  "event_counts",
  {
    simSid: text("sim_sid").notNull(),
    day: ms("day").notNull(),
    kind: text("kind").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.simSid, t.day, t.kind] })],
);

export const quarantine = pgTable(
  "quarantine",
  {
    id: id(),
    receivedAt: ms("received_at").notNull(),
    source: text("source").notNull(),
    deliveryId: text("delivery_id").notNull(),
    position: integer("position").notNull(),
    eventSid: text("event_sid"),
    reason: text("reason").notNull(),
    raw: text("raw").notNull(),
    requeuedAt: ms("requeued_at"),
    requeues: integer("requeues").notNull().default(0),
  },
  (t) => [uniqueIndex("quarantine_delivery_pos_idx").on(t.deliveryId, t.position)],
);

export const anomalies = pgTable(
  "anomalies",
  {
    id: id(),
    sessionSid: text("session_sid").notNull(),
    eventSid: text("event_sid").notNull(),
    kind: text("kind").notNull(),
    detail: text("detail").notNull(),
    detectedAt: ms("detected_at").notNull(),
  },
  (t) => [uniqueIndex("anomalies_unique_idx").on(t.sessionSid, t.eventSid, t.kind)],
);

export const meta = pgTable("meta", {
  key: text("key").primaryKey(),
  value: bigint("value", { mode: "number" }).notNull(),
});

export const assignments = pgTable(
  "assignments",
  {
    id: id(),
    targetType: text("target_type", { enum: ["sim", "iccid", "fleet"] }).notNull(),
    targetId: text("target_id").notNull(),
    customerId: text("customer_id").notNull(),
    effectiveFrom: ms("effective_from").notNull(),
    createdAt: ms("created_at").notNull(),
  },
  (t) => [index("assignments_target_idx").on(t.targetType, t.targetId, t.effectiveFrom)],
);

export const meterReports = pgTable(
  "meter_reports",
  {
    identifier: text("identifier").primaryKey(),
    /** SQLite's implicit rowid, made explicit: the outbox list's cursor (src/views/outbox.ts) */
    rowId: bigint("row_id", { mode: "number" }).notNull().generatedByDefaultAsIdentity(),
    customerId: text("customer_id").notNull(),
    hour: ms("hour").notNull(),
    seq: integer("seq").notNull(),
    value: bytes("value").notNull(),
    timestamp: bigint("timestamp", { mode: "number" }).notNull(), // seconds, as on SQLite
    late: boolean("late").notNull(),
    kind: text("kind", { enum: ["usage", "observed"] })
      .notNull()
      .default("usage"),
    state: text("state", { enum: ["pending", "sent", "failed", "superseded"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    inDoubt: boolean("in_doubt").notNull().default(false),
    firstCallAt: ms("first_call_at"),
    lastError: text("last_error"),
    createdAt: ms("created_at").notNull(),
    sentAt: ms("sent_at"),
  },
  (t) => [
    uniqueIndex("meter_reports_customer_hour_seq_idx").on(t.customerId, t.hour, t.seq),
    index("meter_reports_hour_idx").on(t.hour, t.customerId),
    index("meter_reports_state_idx").on(t.state),
    uniqueIndex("meter_reports_row_id_idx").on(t.rowId),
  ],
);

export const reportDirtyHours = pgTable("report_dirty_hours", { hour: ms("hour").primaryKey() });

export const simFleetHours = pgTable(
  "sim_fleet_hours",
  {
    simSid: text("sim_sid").notNull(),
    hour: ms("hour").notNull(),
    fleetSid: text("fleet_sid").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.simSid, t.hour, t.fleetSid] }),
    index("sim_fleet_hours_fleet_idx").on(t.fleetSid, t.simSid),
  ],
);

export const reportDirtySims = pgTable("report_dirty_sims", {
  simSid: text("sim_sid").primaryKey(),
});

export const billingCustomers = pgTable("billing_customers", {
  customerId: text("customer_id").primaryKey(),
  state: text("state", { enum: ["ok", "none", "ambiguous"] }).notNull(),
  detail: text("detail"),
  subscriptionId: text("subscription_id"),
  itemId: text("item_id"),
  priceId: text("price_id"),
  periodStart: ms("period_start"),
  periodEnd: ms("period_end"),
  prevStart: ms("prev_start"),
  prevEnd: ms("prev_end"),
  prevInvoiceId: text("prev_invoice_id"),
  prevInvoiceStatus: text("prev_invoice_status"),
  prevFinalizesAt: ms("prev_finalizes_at"),
  prevFinalizedAt: ms("prev_finalized_at"),
  refreshedAt: ms("refreshed_at").notNull(),
});

export type SeenEvent = typeof seenEvents.$inferSelect;
export type Sim = typeof sims.$inferSelect;
export type Session = typeof sessions.$inferSelect;
export type ReadingRow = typeof readings.$inferSelect;
export type UsageHourly = typeof usageHourly.$inferSelect;
export type QuarantineRow = typeof quarantine.$inferSelect;
export type AnomalyRow = typeof anomalies.$inferSelect;
export type Assignment = typeof assignments.$inferSelect;
export type MeterReport = typeof meterReports.$inferSelect;
export type SimFleetHour = typeof simFleetHours.$inferSelect;
export type BillingCustomer = typeof billingCustomers.$inferSelect;
