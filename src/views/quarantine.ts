import { z } from "zod";
import { listQuarantineRows, type QuarantineListing } from "../ingest/requeue.ts";
import type { Ledger } from "../ledger/port.ts";
import { idCursor, iso, listOf, page, pageParams, timeParam } from "./json.ts";

export const QuarantineParams = z.object({
  reason: z.string().min(1).optional().meta({ description: "case-insensitive part of the reason" }),
  since: timeParam("since").optional().meta({ description: "received at or after" }),
  ...pageParams,
});

export const QuarantineItem = z
  .object({
    id: z.number().int(),
    received_at: z.string(),
    source: z.string().meta({ description: "twilio, kore, unsigned or replay" }),
    delivery_id: z.string(),
    position: z
      .number()
      .int()
      .meta({ description: "index of the event in its delivery; -1 for an unreadable body" }),
    event_sid: z.string().nullable(),
    reason: z.string(),
    raw: z.string().meta({ description: "the event exactly as received" }),
    requeued_at: z.string().nullable(),
    requeues: z.number().int(),
    counted: z.boolean().nullable().meta({
      description: "its event_sid has been counted since (by any delivery); null without one",
    }),
    requeue_of: z.number().int().nullable(),
    quarantined_again_as: z.array(z.number().int()),
  })
  .meta({ id: "QuarantinedEvent" });
export type QuarantineItem = z.output<typeof QuarantineItem>;
export const QuarantineList = listOf(QuarantineItem, "QuarantineList");

export function quarantineItem(r: QuarantineListing): QuarantineItem {
  return {
    id: r.id,
    received_at: iso(r.receivedAt),
    source: r.source,
    delivery_id: r.deliveryId,
    position: r.position,
    event_sid: r.eventSid,
    reason: r.reason,
    raw: r.raw,
    requeued_at: iso(r.requeuedAt),
    requeues: r.requeues,
    counted: r.counted,
    requeue_of: r.requeueOf,
    quarantined_again_as: r.quarantinedAgainAs,
  };
}

/** Quarantined events, newest first (GET /api/quarantine, `simmeter quarantine`). */
export async function quarantineList(ledger: Ledger, p: z.output<typeof QuarantineParams>) {
  const beforeId = idCursor(p.starting_after);
  const rows = await listQuarantineRows(ledger, {
    limit: p.limit + 1,
    ...(p.reason !== undefined ? { reason: p.reason } : {}),
    ...(p.since !== undefined ? { since: p.since } : {}),
    ...(beforeId !== undefined ? { beforeId } : {}),
  });
  return page(rows, p.limit, (r) => String(r.id), quarantineItem);
}

export const AnomalyParams = z.object({
  kind: z.string().min(1).optional(),
  since: timeParam("since").optional().meta({ description: "detected at or after" }),
  ...pageParams,
});
export const AnomalyItem = z
  .object({
    id: z.number().int(),
    session_sid: z.string(),
    event_sid: z.string(),
    kind: z.string(),
    detail: z.string(),
    detected_at: z.string(),
  })
  .meta({ id: "Anomaly" });
export type AnomalyItem = z.output<typeof AnomalyItem>;
export const AnomalyList = listOf(AnomalyItem, "AnomalyList");

/** Accounting anomalies, newest first (GET /api/anomalies, `simmeter anomalies`). */
export async function anomalyList(ledger: Ledger, p: z.output<typeof AnomalyParams>) {
  const beforeId = idCursor(p.starting_after);
  const rows = await ledger.reads.anomalies({
    ...(beforeId !== undefined ? { beforeId } : {}),
    ...(p.kind !== undefined ? { kind: p.kind } : {}),
    ...(p.since !== undefined ? { since: p.since } : {}),
    limit: p.limit + 1,
  });
  return page(
    rows,
    p.limit,
    (r) => String(r.id),
    (r): AnomalyItem => ({
      id: r.id,
      session_sid: r.sessionSid,
      event_sid: r.eventSid,
      kind: r.kind,
      detail: r.detail,
      detected_at: iso(r.detectedAt),
    }),
  );
}

/** Counts for the overview: rows in quarantine and anomalies recorded. */
export function ledgerCounts(ledger: Ledger): Promise<{ quarantined: number; anomalies: number }> {
  return ledger.reads.counts();
}
