import { z } from "zod";
import type { CustomerBilling } from "../billing/periods.ts";
import type { Ledger } from "../ledger/port.ts";
import type { PlanSettings } from "../reporting/outbox.ts";
import { iso } from "./json.ts";

export const ReportStatus = z
  .object({
    states: z.array(
      z.object({
        state: z.enum(["pending", "sent", "failed", "superseded"]),
        rows: z.number().int(),
        value: z.number().int().meta({ description: "sum of the rows' meter values (bytes)" }),
        late: z
          .number()
          .int()
          .meta({ description: "rows sent into a previous period's draft invoice" }),
      }),
    ),
    pending: z.object({
      rows: z.number().int(),
      bytes: z.number().int(),
      oldest_created_at: z.string().nullable(),
    }),
    stopped: z
      .array(
        z.object({
          identifier: z.string(),
          customer_id: z.string(),
          hour: z.string(),
          value: z.number().int(),
          reason: z.string().nullable(),
        }),
      )
      .meta({
        description: "rows a permanent Stripe error stopped: fix the cause, then retry them",
      }),
    held: z
      .array(
        z.object({
          customer_id: z.string(),
          reason: z.string().meta({
            description: "no_subscription, ambiguous_subscription or stale_period",
          }),
          bytes: z.number().int(),
          detail: z.string(),
        }),
      )
      .meta({
        description: "counted usage no invoice would carry yet; sent once the cause is fixed",
      }),
    unmapped_bytes: z.number().int().meta({
      description: "bytes in the hours to plan that belong to SIMs no assignment covers",
    }),
  })
  .meta({ id: "ReportStatus" });
export type ReportStatus = z.output<typeof ReportStatus>;

/**
 * The outbox and what the next report pass would hold (GET /api/report/status,
 * `simmeter report --status`). Planning runs dry: nothing is written.
 */
export async function reportStatusView(
  ledger: Pick<Ledger, "outbox" | "plan">,
  o: { now: number; settings: PlanSettings; billing?: ReadonlyMap<string, CustomerBilling> },
): Promise<ReportStatus> {
  const pending = await ledger.outbox.pending();
  const plan = await ledger.plan({
    now: o.now,
    settings: o.settings,
    dryRun: true,
    ...(o.billing ? { billing: o.billing } : {}),
  });
  const held = new Map<string, ReportStatus["held"][number]>();
  for (const h of plan.held) {
    const k = `${h.customerId}|${h.reason}`;
    const e = held.get(k) ?? {
      customer_id: h.customerId,
      reason: h.reason,
      bytes: 0,
      detail: h.detail,
    };
    e.bytes += h.bytes;
    held.set(k, e);
  }
  return {
    states: await ledger.outbox.status(),
    pending: {
      rows: pending.length,
      bytes: pending.reduce((n, r) => n + r.value, 0),
      oldest_created_at:
        pending.length > 0
          ? iso(pending.reduce((m, r) => Math.min(m, r.createdAt), Number.POSITIVE_INFINITY))
          : null,
    },
    stopped: (await ledger.outbox.failed()).map((r) => ({
      identifier: r.identifier,
      customer_id: r.customerId,
      hour: iso(r.hour),
      value: r.value,
      reason: r.lastError,
    })),
    held: [...held.values()],
    unmapped_bytes: plan.unmappedBytes,
  };
}
