// The console's overview in one document (GET /api/overview): per customer, the ledger side of
// its current billing period (periodLedger, the function `simmeter reconcile --period current`
// uses); what is not billed and why (unmapped usage as `usage --unmapped`, held usage and stopped
// rows as `report --status`); the outbox; quarantine and anomaly counts. Invoice previews need
// Stripe: the console adds them from invoiceParity (src/billing/parity.ts), as the CLI does.
import { z } from "zod";
import { type ParityLedger, periodLedger } from "../billing/parity.ts";
import type { CustomerBilling } from "../billing/periods.ts";
import type { Ledger } from "../ledger/port.ts";
import type { PlanSettings } from "../reporting/outbox.ts";
import { iso } from "./json.ts";
import { ledgerCounts } from "./quarantine.ts";
import { reportStatusView } from "./report.ts";

const Figures = {
  counted: z.number().int().meta({ description: "bytes counted in the period's hours" }),
  reported: z
    .number()
    .int()
    .meta({ description: "bytes in outbox rows (sent or pending) stamped inside the period" }),
  pending: z.number().int().meta({ description: "of reported, rows Stripe has not confirmed" }),
  unreported: z
    .number()
    .int()
    .meta({ description: "counted usage of the period in no outbox row yet (held, or planning)" }),
  late_in: z
    .number()
    .int()
    .meta({ description: "late usage of earlier periods billed in this one" }),
  carried_out: z
    .number()
    .int()
    .meta({ description: "usage of the period billed on a later invoice" }),
};

export const CurrentPeriod = z
  .object({
    customer_id: z.string(),
    state: z
      .enum(["ok", "none", "ambiguous", "unknown"])
      .meta({ description: "unknown: never looked up in Stripe (reporting off, or not yet)" }),
    detail: z.string().nullable(),
    period_start: z.string().nullable(),
    period_end: z.string().nullable(),
    ...Figures,
  })
  .meta({ id: "CurrentPeriod" });
export type CurrentPeriod = z.output<typeof CurrentPeriod>;

export const Overview = z
  .object({
    object: z.literal("overview"),
    generated_at: z.string(),
    customers: z.number().int().meta({ description: "customers named by an assignment" }),
    periods: z.array(CurrentPeriod),
    totals: z.object(Figures),
    unbilled: z.object({
      unmapped_bytes: z.number().int().meta({ description: "as simmeter usage --unmapped" }),
      unmapped_sims: z.number().int(),
      held_bytes: z.number().int().meta({ description: "usage no invoice would carry yet" }),
      held: z.array(
        z.object({
          reason: z.string(),
          bytes: z.number().int(),
          customers: z.number().int(),
        }),
      ),
      stopped_rows: z.number().int(),
      stopped_bytes: z.number().int(),
    }),
    outbox: z.object({
      pending_rows: z.number().int(),
      pending_bytes: z.number().int(),
      oldest_pending_at: z.string().nullable(),
      sent_rows: z.number().int(),
      late_rows: z.number().int().meta({ description: "rows stamped late (a later invoice)" }),
    }),
    last_sent_at: z
      .string()
      .nullable()
      .meta({ description: "when the newest outbox row was confirmed by Stripe" }),
    quarantine: z.object({
      rows: z.number().int(),
      open: z
        .number()
        .int()
        .meta({ description: "rows whose event has not been counted since (by any delivery)" }),
    }),
    anomalies: z.object({ rows: z.number().int() }),
  })
  .meta({ id: "Overview" });
export type Overview = z.output<typeof Overview>;

/** The current period's ledger figures of every mapped customer, by the given billing state. */
export async function currentPeriods(
  ledger: ParityLedger,
  billing: ReadonlyMap<string, CustomerBilling>,
): Promise<CurrentPeriod[]> {
  const zero = {
    counted: 0,
    reported: 0,
    pending: 0,
    unreported: 0,
    late_in: 0,
    carried_out: 0,
  };
  const out: CurrentPeriod[] = [];
  for (const customerId of (await ledger.customers.billed()).sort()) {
    const b = billing.get(customerId);
    if (b?.state !== "ok" || b.periodStart === null || b.periodEnd === null) {
      out.push({
        customer_id: customerId,
        state: b ? b.state : "unknown",
        detail: b?.detail ?? (b ? null : "subscription not looked up yet"),
        period_start: null,
        period_end: null,
        ...zero,
      });
      continue;
    }
    const l = await periodLedger(ledger, customerId, b.periodStart, b.periodEnd);
    out.push({
      customer_id: customerId,
      state: "ok",
      detail: b.detail,
      period_start: iso(b.periodStart),
      period_end: iso(b.periodEnd),
      counted: l.counted,
      reported: l.reported,
      pending: l.pending,
      unreported: l.unreported,
      late_in: l.lateIn.reduce((s, x) => s + x.bytes, 0),
      carried_out: l.carriedOut,
    });
  }
  return out;
}

/** When Stripe last accepted a usage row (epoch ms), or null: shared with `simmeter doctor`. */
export function lastSentMs(ledger: Pick<Ledger, "views">): Promise<number | null> {
  return ledger.views.lastSentMs();
}

export async function lastSentAt(ledger: Pick<Ledger, "views">): Promise<string | null> {
  return iso(await ledger.views.lastSentMs());
}

export async function overviewView(
  ledger: Ledger,
  o: { now: number; settings: PlanSettings; billing: ReadonlyMap<string, CustomerBilling> },
): Promise<Overview> {
  const periods = await currentPeriods(ledger, o.billing);
  const totals = {
    counted: 0,
    reported: 0,
    pending: 0,
    unreported: 0,
    late_in: 0,
    carried_out: 0,
  };
  for (const p of periods)
    for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += p[k];
  const status = await reportStatusView(ledger, {
    now: o.now,
    settings: o.settings,
    billing: o.billing,
  });
  const unmapped = await ledger.reads.unmapped();
  const held = new Map<string, { reason: string; bytes: number; customers: number }>();
  for (const h of status.held) {
    const e = held.get(h.reason) ?? { reason: h.reason, bytes: 0, customers: 0 };
    e.bytes += h.bytes;
    e.customers++;
    held.set(h.reason, e);
  }
  const state = (s: string) => status.states.find((x) => x.state === s);
  const lateRows = await ledger.views.lateRows();
  const counts = await ledgerCounts(ledger);
  return {
    object: "overview",
    generated_at: iso(o.now),
    customers: periods.length,
    periods,
    totals,
    unbilled: {
      unmapped_bytes: unmapped.reduce((n, u) => n + u.bytes, 0),
      unmapped_sims: unmapped.length,
      held_bytes: status.held.reduce((n, h) => n + h.bytes, 0),
      held: [...held.values()],
      stopped_rows: status.stopped.length,
      stopped_bytes: status.stopped.reduce((n, r) => n + r.value, 0),
    },
    outbox: {
      pending_rows: status.pending.rows,
      pending_bytes: status.pending.bytes,
      oldest_pending_at: status.pending.oldest_created_at,
      sent_rows: state("sent")?.rows ?? 0,
      late_rows: lateRows,
    },
    last_sent_at: await lastSentAt(ledger),
    quarantine: { rows: counts.quarantined, open: await ledger.views.openQuarantine() },
    anomalies: { rows: counts.anomalies },
  };
}
