import type { Reading } from "../accounting/attribute.ts";
import { DAY_MS } from "../accounting/buckets.ts";
import { type ConnectionEvent, classifyCloudEvent } from "../events/schema.ts";
import { type ExpandedItem, MAX_RAW_CHARS, rawOf } from "./expand.ts";
import type { Delivery } from "./job.ts";
import type { IngestSettings } from "./unit-of-work.ts";

// Pure: every decision about one job's events that needs no ledger row but the prune floor. What
// is refused is quarantined here with its reason; what may be counted becomes a claim on
// seen_events, made by the unit of work once per job.

export const ENDED_ONLY_NEEDS_CUMULATIVE =
  "ended-only mode needs data_session_data_total (schema v2) on data-session.ended: without it only the last window would be billed; pin schema version 2 on the subscription, or use BILLING_MODE=realtime, then requeue (simmeter quarantine requeue)";

export type QuarantineRow = {
  receivedAt: number;
  source: Delivery["source"];
  deliveryId: string;
  position: number;
  eventSid: string | null;
  reason: string;
  raw: string;
};

export type AnomalyRow = { sessionSid: string; eventSid: string; kind: string; detail: string };

/** A seen_events row: the claim that makes an event count once. */
export type SeenEvent = { eventSid: string; eventTs: number; kind: string; receivedAt: number };

export type SessionKey = { sessionSid: string; simSid: string };

/**
 * An event that reaches the claim: the first occurrence of its event_sid in the job. It is its
 * own seen_events row (one object per event on the hot path).
 */
export type Candidate = SeenEvent & {
  event: ConnectionEvent;
  delivery: Delivery;
  position: number;
  raw: unknown;
  /** a reading of its session (else counted in event_counts only) */
  billed: boolean;
};

export type Admitted = {
  events: number;
  testEvents: number;
  /** refusals before any claim, in event order */
  quarantine: QuarantineRow[];
  /** in event order; `ifCounted` ones are written only when their event is new to the ledger */
  anomalies: { row: AnomalyRow; ifCounted: boolean }[];
  candidates: Candidate[];
  /** later occurrences of an event_sid already among the candidates */
  duplicatesInJob: number;
  /** the candidates' claims: the candidates themselves */
  seen: readonly SeenEvent[];
  /** the sessions the billed candidates read, first occurrence first */
  sessionKeys: SessionKey[];
};

export function isBilled(
  e: ConnectionEvent,
  settings: Pick<IngestSettings, "billingMode">,
): boolean {
  if (e.kind === "data-session.ended") return true;
  return e.kind === "data-session.updated" && settings.billingMode === "realtime";
}

/** The event's reading, as accounting reads it and the readings table holds it. */
export function toReading(e: ConnectionEvent): Reading & { sessionSid: string } {
  return {
    sessionSid: e.sessionSid as string,
    eventSid: e.eventSid,
    t: e.readingMs as number,
    cumulative: e.cumulativeTotal,
    window: e.windowTotal,
    windowStart: e.windowStartMs,
    ended: e.kind === "data-session.ended",
  };
}

/**
 * Classifies each event: test events are skipped; invalid ones, ended-only events without the
 * cumulative total, and events older than the retention or the prune floor are quarantined (the
 * dedupe record of an older event may be gone, so counting it could double-bill); the first
 * occurrence of every other event_sid becomes a candidate, later ones are duplicates.
 */
export function admit(
  items: readonly ExpandedItem[],
  settings: Pick<IngestSettings, "billingMode" | "retentionDays">,
  now: number,
  /** meta pruned_before: dedupe records before it may have been deleted */
  prunedBefore: number,
): Admitted {
  // Raising RETENTION_DAYS cannot bring back dedupe records that were already deleted.
  const oldest = Math.max(now - settings.retentionDays * DAY_MS, prunedBefore);
  const a: Admitted = {
    events: items.length,
    testEvents: 0,
    quarantine: [],
    anomalies: [],
    candidates: [],
    duplicatesInJob: 0,
    seen: [],
    sessionKeys: [],
  };
  a.seen = a.candidates;
  const claimed = new Set<string>();
  const sessions = new Set<string>();
  const refuse = (
    d: Delivery,
    position: number,
    eventSid: string | null,
    reason: string,
    raw: string,
  ) =>
    a.quarantine.push({
      receivedAt: d.receivedAt,
      source: d.source,
      deliveryId: d.id,
      position,
      eventSid,
      reason,
      raw,
    });
  for (const item of items) {
    const { delivery, position } = item;
    if ("error" in item) {
      refuse(delivery, position, null, item.error, item.raw);
      continue;
    }
    const raw = item.value;
    const c = classifyCloudEvent(raw);
    if (c.kind === "test") {
      a.testEvents++;
      continue;
    }
    if (c.kind === "invalid") {
      const text =
        rawOf(raw) ??
        `(event not re-serialisable; its whole delivery:) ${(delivery.body ?? "").slice(0, MAX_RAW_CHARS)}`;
      refuse(delivery, position, c.eventSid, c.reason, text);
      continue;
    }
    const e = c.event;
    if (
      settings.billingMode === "ended-only" &&
      e.kind === "data-session.ended" &&
      e.cumulativeTotal === null
    ) {
      // Without the cumulative total an ended event carries only its last window: billing
      // it would silently drop the rest of the session (500 B of a 10 MB session).
      refuse(
        delivery,
        position,
        e.eventSid,
        ENDED_ONLY_NEEDS_CUMULATIVE,
        rawOf(raw) ?? "(event not re-serialisable)",
      );
      a.anomalies.push({
        row: {
          sessionSid: e.sessionSid ?? "",
          eventSid: e.eventSid,
          kind: "ended_only_without_cumulative",
          detail: ENDED_ONLY_NEEDS_CUMULATIVE,
        },
        ifCounted: false,
      });
      continue;
    }
    if (e.timestampMs < oldest) {
      refuse(
        delivery,
        position,
        e.eventSid,
        e.timestampMs < prunedBefore
          ? `event time ${new Date(e.timestampMs).toISOString()} is before ${new Date(prunedBefore).toISOString()}, up to which dedupe records were pruned: counting it could double-bill, so it is refused`
          : `event time ${new Date(e.timestampMs).toISOString()} is older than the ${settings.retentionDays}-day retention: its dedupe record may be pruned, so counting it could double-bill; raise RETENTION_DAYS (before anything is pruned) to replay old archives`,
        rawOf(raw) ?? "(event not re-serialisable)",
      );
      continue;
    }
    if (claimed.has(e.eventSid)) {
      a.duplicatesInJob++;
      continue;
    }
    claimed.add(e.eventSid);
    const billed = isBilled(e, settings);
    a.candidates.push({
      eventSid: e.eventSid,
      eventTs: e.timestampMs,
      kind: e.kind,
      receivedAt: delivery.receivedAt,
      event: e,
      delivery,
      position,
      raw,
      billed,
    });
    if (e.oddities.length > 0) {
      // Billed all the same: only descriptive fields are odd (one row per event).
      a.anomalies.push({
        row: {
          sessionSid: e.sessionSid ?? "",
          eventSid: e.eventSid,
          kind: "odd_field",
          detail: e.oddities.join("; "),
        },
        ifCounted: true,
      });
    }
    if (billed && !sessions.has(e.sessionSid as string)) {
      sessions.add(e.sessionSid as string);
      a.sessionKeys.push({ sessionSid: e.sessionSid as string, simSid: e.simSid });
    }
  }
  return a;
}
