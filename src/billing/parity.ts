import type Stripe from "stripe";
import { dayStart } from "../accounting/buckets.ts";
import type { Ledger } from "../ledger/port.ts";
import type { CustomerBilling } from "./periods.ts";

// Invoice parity and per-SIM statements: what the customer pays is what the invoice shows, so
// both are computed by the customer's own billing period, from the same ledger rows.

export type PeriodChoice = "current" | "previous" | { invoiceId: string };

export type Period = {
  start: number;
  end: number;
  /** the invoice that carries it: a finalized or draft invoice, or the preview of the open period */
  invoiceId: string | null;
  preview: boolean;
};

/** Rows that count toward what Stripe holds (superseded and stopped rows never reached it). */
const COUNTED_STATES = new Set(["sent", "pending"]);

/** The bounds of a customer's period, or why there are none. */
export async function resolvePeriod(
  stripe: Stripe,
  b: CustomerBilling,
  choice: PeriodChoice,
): Promise<Period | string> {
  if (b.state !== "ok" || b.periodStart === null || b.periodEnd === null)
    return b.detail ?? "no active subscription item on the meter";
  if (choice === "current")
    return { start: b.periodStart, end: b.periodEnd, invoiceId: null, preview: true };
  if (choice === "previous") {
    if (!b.previous) return "no previous period: the subscription began in the current one";
    return {
      start: b.previous.start,
      end: b.previous.end,
      invoiceId: b.previous.invoiceId,
      preview: false,
    };
  }
  const invoice = await stripe.invoices.retrieve(choice.invoiceId);
  const line = (await invoiceLines(stripe, choice.invoiceId)).find(
    (l) => l.parent?.subscription_item_details?.subscription_item === b.itemId,
  );
  if (!line) return `invoice ${choice.invoiceId} has no line for subscription item ${b.itemId}`;
  if (
    (typeof invoice.customer === "string" ? invoice.customer : invoice.customer?.id) !==
    b.customerId
  )
    return `invoice ${choice.invoiceId} belongs to another customer`;
  return {
    start: line.period.start * 1000,
    end: line.period.end * 1000,
    invoiceId: choice.invoiceId,
    preview: false,
  };
}

async function invoiceLines(stripe: Stripe, invoiceId: string): Promise<Stripe.InvoiceLineItem[]> {
  return stripe.invoices
    .listLineItems(invoiceId, { limit: 100 })
    .autoPagingToArray({ limit: 10_000 });
}

/** The metered line quantity for the customer's item on the invoice (or the open period's preview). */
export async function invoiceQuantity(
  stripe: Stripe,
  b: CustomerBilling,
  period: Period,
): Promise<{ quantity: number; invoiceId: string | null; status: string | null } | null> {
  let lines: Stripe.InvoiceLineItem[];
  let invoiceId = period.invoiceId;
  let status: string | null = null;
  if (period.preview) {
    const preview = await stripe.invoices.createPreview({
      customer: b.customerId,
      subscription: b.subscriptionId as string,
    });
    lines = preview.lines.data;
    invoiceId = preview.id ?? null;
    status = "preview";
  } else {
    if (!invoiceId) return null;
    const invoice = await stripe.invoices.retrieve(invoiceId);
    status = invoice.status ?? null;
    lines = await invoiceLines(stripe, invoiceId);
  }
  const line = lines.find(
    (l) =>
      l.parent?.subscription_item_details?.subscription_item === b.itemId &&
      l.period.start * 1000 === period.start,
  );
  return { quantity: line?.quantity ?? 0, invoiceId, status };
}

export type PeriodLedger = {
  /** bytes counted in the customer's hours inside the period */
  counted: number;
  /** counted usage per SIM (and per day) inside the period */
  bySim: Map<string, { bytes: number; byDay: Map<number, number> }>;
  /** late usage from earlier periods stamped into this one, by its own hour */
  lateIn: { hour: number; bytes: number }[];
  /** usage of this period's hours stamped into a later period (billed on a later invoice) */
  carriedOut: number;
  /** what Stripe should aggregate for the period: rows sent (or pending) stamped inside it */
  reported: number;
  /** of reported, rows not yet confirmed by Stripe */
  pending: number;
  /** counted usage of the period not in any row yet (being planned, or held) */
  unreported: number;
};

/** What the parity and statement functions read: the usage of the period's hours and the outbox. */
export type ParityLedger = Pick<Ledger, "customers" | "outbox">;

/** The ledger's side of one customer's period. */
export async function periodLedger(
  ledger: ParityLedger,
  customerId: string,
  start: number,
  end: number,
): Promise<PeriodLedger> {
  const out: PeriodLedger = {
    counted: 0,
    bySim: new Map(),
    lateIn: [],
    carriedOut: 0,
    reported: 0,
    pending: 0,
    unreported: 0,
  };
  // usage and outbox from one snapshot: a planning pass between two reads would misstate both
  const { usage, reports } = await ledger.customers.accounts(start, end);
  for (const u of usage) {
    if (u.bytes === 0 || u.customer !== customerId) continue;
    out.counted += u.bytes;
    const s = out.bySim.get(u.simSid) ?? { bytes: 0, byDay: new Map<number, number>() };
    s.bytes += u.bytes;
    const d = dayStart(u.hour);
    s.byDay.set(d, (s.byDay.get(d) ?? 0) + u.bytes);
    out.bySim.set(u.simSid, s);
  }
  const lateIn = new Map<number, number>();
  let rowsForOwnHours = 0;
  for (const r of reports) {
    if (r.customerId !== customerId || !COUNTED_STATES.has(r.state)) continue;
    const t = r.timestamp * 1000;
    const ownHour = r.hour >= start && r.hour < end;
    const stampedIn = t >= start && t < end;
    if (ownHour) rowsForOwnHours += r.value;
    if (stampedIn) {
      out.reported += r.value;
      if (r.state === "pending") out.pending += r.value;
      if (r.hour < start) lateIn.set(r.hour, (lateIn.get(r.hour) ?? 0) + r.value);
    }
    if (ownHour && t >= end) out.carriedOut += r.value;
  }
  out.lateIn = [...lateIn.entries()]
    .filter(([, v]) => v !== 0)
    .sort(([a], [b]) => a - b)
    .map(([hour, bytes]) => ({ hour, bytes }));
  out.unreported = out.counted - rowsForOwnHours;
  return out;
}

export type ParityRow = {
  customer: string;
  period_start: string;
  period_end: string;
  invoice: string | null;
  invoice_status: string | null;
  counted: number;
  late_in: number;
  carried_out: number;
  unreported: number;
  reported: number;
  invoice_quantity: number | null;
  /** invoice quantity − reported: what Stripe's invoice is missing (or holds beyond the ledger) */
  difference: number | null;
  problem: string | null;
};

const iso = (ms: number) => new Date(ms).toISOString();

/** Invoice parity for one customer and period: counted, reported and invoiced bytes side by side. */
export async function invoiceParity(
  ledger: ParityLedger,
  stripe: Stripe,
  b: CustomerBilling,
  choice: PeriodChoice,
): Promise<ParityRow> {
  const period = await resolvePeriod(stripe, b, choice);
  if (typeof period === "string") {
    return {
      customer: b.customerId,
      period_start: "",
      period_end: "",
      invoice: null,
      invoice_status: null,
      counted: 0,
      late_in: 0,
      carried_out: 0,
      unreported: 0,
      reported: 0,
      invoice_quantity: null,
      difference: null,
      problem: period,
    };
  }
  const l = await periodLedger(ledger, b.customerId, period.start, period.end);
  const q = await invoiceQuantity(stripe, b, period);
  return {
    customer: b.customerId,
    period_start: iso(period.start),
    period_end: iso(period.end),
    invoice: q?.invoiceId ?? null,
    invoice_status: q?.status ?? null,
    counted: l.counted,
    late_in: l.lateIn.reduce((s, x) => s + x.bytes, 0),
    carried_out: l.carriedOut,
    unreported: l.unreported,
    reported: l.reported,
    invoice_quantity: q?.quantity ?? null,
    difference: q ? q.quantity - l.reported : null,
    problem: q ? null : "Stripe has not created this period's invoice yet",
  };
}

/** A difference, usage not yet reported, or a period that cannot be checked. */
export function parityProblem(r: ParityRow): boolean {
  return r.problem !== null || r.difference !== 0 || r.unreported !== 0;
}

export type StatementLine = {
  sim_sid: string;
  iccid: string | null;
  unique_name: string | null;
  fleet_sid: string | null;
  day: string | null;
  bytes: number;
};

export type Statement = {
  customer: string;
  period_start: string;
  period_end: string;
  invoice: string | null;
  lines: StatementLine[];
  late_in: { hour: string; bytes: number }[];
  carried_out: number;
  unreported: number;
  total: number;
  invoice_quantity: number | null;
};

/**
 * The per-SIM itemisation of one invoice: one line per SIM (or per SIM and day), late usage from
 * earlier periods on its own, and a total (SIM lines + late usage − usage billed later − usage not
 * yet reported) that equals the invoice line quantity once everything is reported.
 */
export async function statement(
  ledger: ParityLedger,
  stripe: Stripe,
  b: CustomerBilling,
  choice: PeriodChoice,
  by: "period" | "day",
): Promise<Statement> {
  const period = await resolvePeriod(stripe, b, choice);
  if (typeof period === "string") throw new Error(`${b.customerId}: ${period}`);
  const l = await periodLedger(ledger, b.customerId, period.start, period.end);
  const info = await ledger.customers.sims([...l.bySim.keys()]);
  const lines: StatementLine[] = [];
  for (const [simSid, s] of [...l.bySim.entries()].sort(([a], [c]) => (a < c ? -1 : 1))) {
    const base = {
      sim_sid: simSid,
      iccid: info.get(simSid)?.iccid ?? null,
      unique_name: info.get(simSid)?.uniqueName ?? null,
      fleet_sid: info.get(simSid)?.fleetSid ?? null,
    };
    if (by === "day") {
      for (const [day, bytes] of [...s.byDay.entries()].sort(([a], [c]) => a - c))
        lines.push({ ...base, day: iso(day).slice(0, 10), bytes });
    } else lines.push({ ...base, day: null, bytes: s.bytes });
  }
  const lateIn = l.lateIn.map((x) => ({ hour: iso(x.hour), bytes: x.bytes }));
  const q = await invoiceQuantity(stripe, b, period);
  return {
    customer: b.customerId,
    period_start: iso(period.start),
    period_end: iso(period.end),
    invoice: q?.invoiceId ?? null,
    lines,
    late_in: lateIn,
    carried_out: l.carriedOut,
    unreported: l.unreported,
    total: l.counted + l.lateIn.reduce((s, x) => s + x.bytes, 0) - l.carriedOut - l.unreported,
    invoice_quantity: q?.quantity ?? null,
  };
}
