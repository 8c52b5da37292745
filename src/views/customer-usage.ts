// Customers with their SIMs and bytes (GET /api/customers/summary, /api/customers/{customer}): who
// used what, by the reporter's own rule for an hour's customer (src/customers/resolve.ts), so the
// bytes here are the bytes billed to each customer (and the unmapped rest is `usage --unmapped`).
import { z } from "zod";
import type { CustomerBilling } from "../billing/periods.ts";
import type { Assignment } from "../db/schema.ts";
import type { Ledger } from "../ledger/port.ts";
import { AssignmentItem } from "./customers.ts";
import { iso, listOf, page, pageParams } from "./json.ts";

type Owned = { bytes: number; first: number; last: number };

type CustomerLedger = Pick<Ledger, "customers" | "assignments">;

/**
 * Every SIM-hour with usage, resolved to its customer: customer (null: unmapped) → SIM → bytes and
 * first/last hour.
 */
export async function usageByOwner(
  ledger: Pick<Ledger, "customers">,
): Promise<Map<string | null, Map<string, Owned>>> {
  const out = new Map<string | null, Map<string, Owned>>();
  for (const r of await ledger.customers.usageOwned(
    Number.MIN_SAFE_INTEGER,
    Number.MAX_SAFE_INTEGER,
  )) {
    if (r.bytes === 0) continue;
    let sims = out.get(r.customer);
    if (!sims) {
      sims = new Map();
      out.set(r.customer, sims);
    }
    const e = sims.get(r.simSid) ?? { bytes: 0, first: r.hour, last: r.hour };
    e.bytes += r.bytes;
    e.first = Math.min(e.first, r.hour);
    e.last = Math.max(e.last, r.hour);
    sims.set(r.simSid, e);
  }
  return out;
}

/** Every assignment, and the SIMs each one covers (by assignment id). */
async function assignmentsCovering(
  ledger: CustomerLedger,
): Promise<{ assignments: Assignment[]; covers: Map<number, string[]> }> {
  const assignments = await ledger.assignments.list();
  const covered = await ledger.customers.covered(assignments);
  return {
    assignments,
    covers: new Map(assignments.map((a, i) => [a.id, covered[i] ?? []])),
  };
}

const BillingState = z
  .object({
    state: z.enum(["ok", "none", "ambiguous"]),
    detail: z.string().nullable(),
    subscription_id: z.string().nullable(),
    item_id: z.string().nullable(),
    period_start: z.string().nullable(),
    period_end: z.string().nullable(),
    refreshed_at: z.string(),
  })
  .meta({ id: "CustomerBilling" });
type BillingState = z.output<typeof BillingState>;

function billingState(b: CustomerBilling | undefined): BillingState | null {
  if (!b) return null;
  return {
    state: b.state,
    detail: b.detail,
    subscription_id: b.subscriptionId,
    item_id: b.itemId,
    period_start: iso(b.periodStart),
    period_end: iso(b.periodEnd),
    refreshed_at: iso(b.refreshedAt),
  };
}

export const CustomerSummaryParams = z.object(pageParams);
export const CustomerSummary = z
  .object({
    customer_id: z.string(),
    sims: z
      .number()
      .int()
      .meta({ description: "SIMs with usage billed to it (or assigned, unused)" }),
    bytes: z.number().int().meta({ description: "all counted bytes attributed to it" }),
    first_hour: z.string().nullable(),
    last_hour: z.string().nullable(),
    assignments: z.number().int(),
    billing: BillingState.nullable().meta({
      description: "its subscription item on the meter, as last looked up; null: never",
    }),
  })
  .meta({ id: "CustomerSummary" });
export type CustomerSummary = z.output<typeof CustomerSummary>;
export const CustomerSummaryList = listOf(CustomerSummary, "CustomerSummaryList");

/** SIMs of a customer: those with usage attributed to it, plus assigned SIMs never used. */
function simsOf(
  customerId: string,
  owned: Map<string | null, Map<string, Owned>>,
  covers: ReadonlyMap<number, readonly string[]>,
  assignments: readonly Assignment[],
): Map<string, Owned | null> {
  const out = new Map<string, Owned | null>(owned.get(customerId) ?? []);
  const used = new Set<string>();
  for (const sims of owned.values()) for (const s of sims.keys()) used.add(s);
  for (const a of assignments) {
    if (a.customerId !== customerId) continue;
    for (const s of covers.get(a.id) ?? []) if (!used.has(s) && !out.has(s)) out.set(s, null);
  }
  return out;
}

/** Customers named by an assignment, with their SIMs and bytes, ordered by customer id. */
export async function customerSummaryList(
  ledger: CustomerLedger,
  p: z.output<typeof CustomerSummaryParams>,
  billing: ReadonlyMap<string, CustomerBilling>,
) {
  const owned = await usageByOwner(ledger);
  const { assignments, covers } = await assignmentsCovering(ledger);
  const customers = [...new Set(assignments.map((a) => a.customerId))].sort();
  const after = p.starting_after;
  const selected = (after === undefined ? customers : customers.filter((c) => c > after)).slice(
    0,
    p.limit + 1,
  );
  return page(
    selected,
    p.limit,
    (c) => c,
    (c): CustomerSummary => {
      const sims = simsOf(c, owned, covers, assignments);
      let bytes = 0;
      let first = Number.POSITIVE_INFINITY;
      let last = Number.NEGATIVE_INFINITY;
      for (const o of sims.values()) {
        if (!o) continue;
        bytes += o.bytes;
        first = Math.min(first, o.first);
        last = Math.max(last, o.last);
      }
      return {
        customer_id: c,
        sims: sims.size,
        bytes,
        first_hour: Number.isFinite(first) ? iso(first) : null,
        last_hour: Number.isFinite(last) ? iso(last) : null,
        assignments: assignments.filter((a) => a.customerId === c).length,
        billing: billingState(billing.get(c)),
      };
    },
  );
}

export const CustomerParams = z.object({
  customer: z
    .string()
    .regex(/^cus_[A-Za-z0-9]{1,64}$/, "a Stripe customer id (cus_…)")
    .meta({ description: "Stripe customer id" }),
});

export const CustomerSim = z
  .object({
    sim_sid: z.string(),
    iccid: z.string().nullable(),
    unique_name: z.string().nullable(),
    fleet_sid: z.string().nullable().meta({ description: "the SIM's current fleet" }),
    bytes: z.number().int().meta({ description: "bytes of the SIM attributed to this customer" }),
    first_hour: z.string().nullable(),
    last_hour: z.string().nullable(),
  })
  .meta({ id: "CustomerSim" });
export type CustomerSim = z.output<typeof CustomerSim>;

export const CustomerDetail = z
  .object({
    object: z.literal("customer"),
    customer_id: z.string(),
    bytes: z.number().int(),
    billing: BillingState.nullable(),
    assignments: z.array(AssignmentItem),
    sims: z.array(CustomerSim),
  })
  .meta({ id: "Customer" });
export type CustomerDetail = z.output<typeof CustomerDetail>;

export class UnknownCustomer extends Error {
  override name = "UnknownCustomer";
}

/** One customer: its assignments, its SIMs with the bytes attributed to it, its billing state. */
export async function customerDetail(
  ledger: CustomerLedger,
  customerId: string,
  billing: ReadonlyMap<string, CustomerBilling>,
): Promise<CustomerDetail> {
  const { assignments, covers } = await assignmentsCovering(ledger);
  const mine = assignments.filter((a) => a.customerId === customerId).sort((a, b) => a.id - b.id);
  const owned = await usageByOwner(ledger);
  if (mine.length === 0 && !owned.has(customerId))
    throw new UnknownCustomer(`no assignment names ${customerId} (simmeter customers list)`);
  const sims = simsOf(customerId, owned, covers, assignments);
  const info = await ledger.customers.sims([...sims.keys()]);
  const list: CustomerSim[] = [...sims.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([simSid, o]) => ({
      sim_sid: simSid,
      iccid: info.get(simSid)?.iccid ?? null,
      unique_name: info.get(simSid)?.uniqueName ?? null,
      fleet_sid: info.get(simSid)?.fleetSid ?? null,
      bytes: o?.bytes ?? 0,
      first_hour: o ? iso(o.first) : null,
      last_hour: o ? iso(o.last) : null,
    }));
  return {
    object: "customer",
    customer_id: customerId,
    bytes: list.reduce((n, s) => n + s.bytes, 0),
    billing: billingState(billing.get(customerId)),
    assignments: mine.map((a) => ({
      id: a.id,
      target_type: a.targetType,
      target_id: a.targetId,
      customer_id: a.customerId,
      effective_from: iso(a.effectiveFrom),
      created_at: iso(a.createdAt),
    })),
    sims: list,
  };
}
