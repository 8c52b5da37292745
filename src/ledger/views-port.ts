import type { MeterReport } from "../db/schema.ts";

// The ledger reads behind the operator pages that /api and the console share (the outbox rows,
// the overview's counters, the usage and lag series): one interface, a SQLite and a PostgreSQL
// implementation (src/ledger/sqlite/views.ts, src/ledger/pg/views.ts) with the same rows in the
// same order.

/** A usage row (bytes never 0). */
export type HourUsage = { simSid: string; hour: number; bytes: number };

/** Dedupe records of one hour of event time: how late the events reached the receiver. */
export type LagHour = {
  hour: number;
  events: number;
  /** mean of max(received − event time, 0), rounded to whole ms */
  avgLag: number | null;
  maxLag: number | null;
};

export type OutboxRowFilter = {
  state?: MeterReport["state"];
  late?: boolean;
  customer?: string;
  /** only rows inserted before this row id (the list's cursor) */
  beforeRowId?: number;
  limit: number;
};

export type SimAssignmentRow = {
  id: number;
  targetType: "sim" | "iccid" | "fleet";
  targetId: string;
  customerId: string;
  effectiveFrom: number;
  createdAt: number;
};

/** Everything the ledger holds about one SIM (GET /api/sims/{sim}), read from one snapshot. */
export type SimRecord = {
  info: {
    iccid: string;
    fleetSid: string | null;
    uniqueName: string | null;
    accountSid: string;
    firstSeenAt: number;
    lastEventAt: number;
  } | null;
  /** its usage rows with bytes, by hour, each with the customer of its hour (null: unmapped) */
  usage: { hour: number; bytes: number; customer: string | null }[];
  sessionsTotal: number;
  lastReadingAt: number | null;
  /** its newest sessions (by start, else last reading), each with its readings by time */
  sessions: {
    sessionSid: string;
    startTime: number | null;
    endTime: number | null;
    totalBytes: number;
    basis: "cumulative" | "window";
    readingCount: number;
    lastReadingAt: number;
    /** the session's bytes per hour, as stored (JSON) */
    buckets: string;
    readings: {
      t: number;
      eventSid: string;
      cumulative: number | null;
      windowBytes: number | null;
      windowStart: number | null;
      ended: boolean;
      /** when its event reached the receiver (null once its dedupe record is pruned) */
      receivedAt: number | null;
    }[];
  }[];
  /** the newest 200 anomalies of its sessions, newest first */
  anomalies: {
    id: number;
    sessionSid: string;
    eventSid: string;
    kind: string;
    detail: string;
    detectedAt: number;
  }[];
  /** its fleet membership per hour, by hour */
  fleetHours: { hour: number; fleetSid: string }[];
  /** assignments of the SIM itself and of its ICCID, by effective time and id */
  own: SimAssignmentRow[];
  /** assignments of every fleet it was seen in (and its current one), by effective time and id */
  fleetAssignments: SimAssignmentRow[];
};

export interface ViewsPort {
  /** one SIM's record with its `sessions` newest sessions */
  simRecord(simSid: string, sessions: number): Promise<SimRecord>;
  /** outbox rows, newest first by insertion order (SQLite's rowid, PostgreSQL's row_id) */
  outboxRows(f: OutboxRowFilter): Promise<{ rowId: number; row: MeterReport }[]>;
  /** usage rows with bytes of [from, to), of one SIM or all, by SIM then hour */
  usageRows(from: number, to: number, simSid?: string): Promise<HourUsage[]>;
  /** the dedupe records of [from, to) grouped by hour of event time, hours with events only */
  ingestLag(from: number, to: number): Promise<LagHour[]>;
  /** when Stripe last accepted a usage row (epoch ms), or null */
  lastSentMs(): Promise<number | null>;
  /** quarantine rows whose event is not counted since (an event_sid not seen, or a body) */
  openQuarantine(): Promise<number>;
  /** late rows sent or pending */
  lateRows(): Promise<number>;
  /**
   * `simmeter doctor`'s quarantine figure: events not counted since (an event quarantined again
   * after a requeue is one event; a body that was not JSON counts once), and the newest receipt
   */
  quarantineBacklog(): Promise<{ events: number; newest: number | null }>;
  /** quarantine rows with exactly this reason */
  quarantinedFor(reason: string): Promise<number>;
  /** what the next report pass has to do: pending outbox rows plus dirty hours */
  reportWork(): Promise<number>;
}
