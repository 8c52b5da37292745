// The questions only Stripe can finish answering: invoice parity per customer (`simmeter reconcile
// --period … --json`) and the per-SIM statement of one invoice (`simmeter statement`). Both are the
// functions of src/billing/parity.ts over subscription periods looked up live and stored nowhere,
// exactly as the CLI does; these helpers only hold the loop and the CSV, so the console and the
// CLI print the same figures.
import { stringify } from "csv-stringify/sync";
import type Stripe from "stripe";
import {
  invoiceParity,
  type ParityLedger,
  type ParityRow,
  type PeriodChoice,
  type Statement,
} from "../billing/parity.ts";
import type { CustomerBilling } from "../billing/periods.ts";
import { refreshBilling } from "../billing/subscriptions.ts";
import type { Ledger } from "../ledger/port.ts";

export type StripeAccess = { client: Stripe; eventName: string };

/** Every mapped customer's subscription item and periods, looked up now (nothing stored). */
export function lookUpPeriods(
  ledger: Pick<Ledger, "customers" | "billing">,
  stripe: StripeAccess,
  now: number,
): Promise<Map<string, CustomerBilling>> {
  return refreshBilling({
    ledger,
    stripe: stripe.client,
    eventName: stripe.eventName,
    now,
    dryRun: true,
  });
}

/**
 * Invoice parity of every customer for the current or previous period: the rows of `simmeter
 * reconcile --period current|previous --json`, in the same order.
 */
export async function parityRows(
  ledger: ParityLedger,
  stripe: Stripe,
  billing: ReadonlyMap<string, CustomerBilling>,
  choice: Exclude<PeriodChoice, { invoiceId: string }>,
): Promise<ParityRow[]> {
  const rows: ParityRow[] = [];
  for (const b of billing.values()) rows.push(await invoiceParity(ledger, stripe, b, choice));
  return rows;
}

/** A statement as CSV, as `simmeter statement --format csv` writes it. */
export function statementCsv(s: Statement): string {
  const rows: Record<string, string | number | null>[] = s.lines.map((l) => ({
    section: "sim",
    sim_sid: l.sim_sid,
    iccid: l.iccid,
    unique_name: l.unique_name,
    fleet_sid: l.fleet_sid,
    day: l.day,
    hour: null,
    bytes: l.bytes,
  }));
  const extra = (section: string, bytes: number, hour: string | null = null) =>
    rows.push({
      section,
      sim_sid: null,
      iccid: null,
      unique_name: null,
      fleet_sid: null,
      day: null,
      hour,
      bytes,
    });
  for (const l of s.late_in) extra("late_from_earlier_period", l.bytes, l.hour);
  if (s.carried_out) extra("billed_on_a_later_invoice", -s.carried_out);
  if (s.unreported) extra("not_yet_reported", -s.unreported);
  extra("total", s.total);
  return stringify(rows, {
    header: true,
    columns: ["section", "sim_sid", "iccid", "unique_name", "fleet_sid", "day", "hour", "bytes"],
  });
}
