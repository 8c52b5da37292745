// Outbox rows one by one (GET /api/report/rows): pending rows, rows a permanent Stripe error
// stopped (with that error), late rows (stamped into a later invoice than their hour's), newest
// first. `simmeter report --status` summarises the same table.
import { z } from "zod";
import type { Ledger } from "../ledger/port.ts";
import { idCursor, iso, listOf, page, pageParams } from "./json.ts";

export const OUTBOX_STATES = ["pending", "sent", "failed", "superseded"] as const;

export const OutboxRowParams = z.object({
  state: z
    .enum(OUTBOX_STATES)
    .optional()
    .meta({ description: "failed = stopped by a permanent Stripe error" }),
  late: z
    .enum(["true", "false"])
    .transform((v) => v === "true")
    .optional()
    .meta({
      description: "only rows stamped late (billed on a later invoice than their hour's), or not",
      override: { type: "string" },
    }),
  customer: z.string().min(1).optional(),
  ...pageParams,
});

export const OutboxRow = z
  .object({
    identifier: z.string().meta({ description: "the meter event identifier" }),
    customer_id: z.string(),
    hour: z.string().meta({ description: "the usage hour the row reports" }),
    seq: z.number().int(),
    value: z.number().int().meta({ description: "bytes (negative for a correction)" }),
    timestamp: z.string().meta({ description: "the meter event's timestamp (where it is billed)" }),
    late: z.boolean(),
    kind: z.enum(["usage", "observed"]),
    state: z.enum(OUTBOX_STATES),
    attempts: z.number().int(),
    in_doubt: z.boolean(),
    last_error: z
      .string()
      .nullable()
      .meta({ description: "Stripe's last error, or why superseded" }),
    created_at: z.string(),
    sent_at: z.string().nullable(),
  })
  .meta({ id: "OutboxRow" });
export type OutboxRow = z.output<typeof OutboxRow>;
export const OutboxRowList = listOf(OutboxRow, "OutboxRowList");

/** Outbox rows, newest first (by insertion), filtered by state, lateness and customer. */
export async function outboxRowList(
  ledger: Pick<Ledger, "views">,
  p: z.output<typeof OutboxRowParams>,
) {
  const before = idCursor(p.starting_after);
  const rows = await ledger.views.outboxRows({
    ...(p.state !== undefined ? { state: p.state } : {}),
    ...(p.late !== undefined ? { late: p.late } : {}),
    ...(p.customer !== undefined ? { customer: p.customer } : {}),
    ...(before !== undefined ? { beforeRowId: before } : {}),
    limit: p.limit + 1,
  });
  return page(
    rows,
    p.limit,
    (r) => String(r.rowId),
    ({ row: r }): OutboxRow => ({
      identifier: r.identifier,
      customer_id: r.customerId,
      hour: iso(r.hour),
      seq: r.seq,
      value: r.value,
      timestamp: iso(r.timestamp * 1000),
      late: r.late,
      kind: r.kind,
      state: r.state,
      attempts: r.attempts,
      in_doubt: r.inDoubt,
      last_error: r.lastError,
      created_at: iso(r.createdAt),
      sent_at: iso(r.sentAt),
    }),
  );
}
