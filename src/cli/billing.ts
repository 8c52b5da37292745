import { type Command, InvalidArgumentError, Option } from "commander";
import { stringify } from "csv-stringify/sync";
import {
  invoiceParity,
  type ParityRow,
  type PeriodChoice,
  parityProblem,
  type Statement,
  statement,
} from "../billing/parity.ts";
import { refreshBilling } from "../billing/subscriptions.ts";
import type { Config } from "../config.ts";
import type { Ledger } from "../ledger/port.ts";
import { createStripe } from "../reporting/stripe.ts";
import { statementCsv } from "../views/parity.ts";
import { cliLedger, table } from "./context.ts";

// Commands about what the invoice shows: per-SIM statements and invoice parity (reconcile --period).

export type Format = "text" | "json" | "csv";

export function parsePeriod(v: string): PeriodChoice {
  if (v === "current" || v === "previous") return v;
  if (/^in_[A-Za-z0-9_]{1,250}$/.test(v)) return { invoiceId: v };
  throw new InvalidArgumentError(
    `${JSON.stringify(v)} is not a period: give current, previous or an invoice id (in_…)`,
  );
}

export function parseFormat(v: string): Format {
  if (v === "text" || v === "json" || v === "csv") return v;
  throw new InvalidArgumentError(`${JSON.stringify(v)} is not a format: give text, json or csv`);
}

/** `reconcile --period`: invoice parity per customer; exits 1 on any difference. */
export async function reconcilePeriod(
  config: Config,
  ledger: Ledger,
  choice: PeriodChoice,
  format: Format,
): Promise<void> {
  const stripe = createStripe(config);
  // Looked up, not stored: the database is open read-only.
  const billing = await refreshBilling({
    ledger,
    stripe,
    eventName: config.STRIPE_METER_EVENT_NAME,
    now: Date.now(),
    dryRun: true,
  });
  const rows: ParityRow[] = [];
  for (const b of billing.values()) {
    // An invoice id names one customer's invoice; skip the others.
    if (typeof choice === "object" && b.state !== "ok") continue;
    const r = await invoiceParity(ledger, stripe, b, choice);
    if (typeof choice === "object" && r.problem?.includes("another customer")) continue;
    if (typeof choice === "object" && r.problem?.includes("has no line for")) continue;
    rows.push(r);
  }
  if (typeof choice === "object" && rows.length === 0)
    throw new Error(`invoice ${choice.invoiceId} is not a metered invoice of any mapped customer`);
  if (format === "json") process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else if (format === "csv") process.stdout.write(stringify(rows, { header: true }));
  else if (rows.length === 0) process.stdout.write("no mapped customers\n");
  else process.stdout.write(`${table(rows as unknown as Record<string, unknown>[])}\n`);
  if (rows.some(parityProblem)) {
    process.stderr.write(
      "invoice parity differs: difference = invoice quantity − reported; unreported = counted usage of the period not yet in the outbox (held, or being planned)\n",
    );
    process.exitCode = 1;
  }
}

function statementText(s: Statement): string {
  const out = [
    `statement for ${s.customer}, period ${s.period_start} to ${s.period_end}${s.invoice ? ` (invoice ${s.invoice})` : ""}`,
    "",
    s.lines.length
      ? table(s.lines as unknown as Record<string, unknown>[])
      : "no usage in this period",
  ];
  if (s.late_in.length) {
    out.push("", "late usage from earlier periods, billed on this invoice:");
    out.push(table(s.late_in as unknown as Record<string, unknown>[]));
  }
  if (s.carried_out)
    out.push("", `usage of this period billed on a later invoice: −${s.carried_out}`);
  if (s.unreported) out.push("", `usage not yet reported to Stripe: −${s.unreported}`);
  out.push(
    "",
    `total ${s.total} bytes; invoice line quantity ${s.invoice_quantity ?? "(no invoice yet)"}`,
  );
  return `${out.join("\n")}\n`;
}

export function registerBillingCommands(program: Command): void {
  program
    .command("statement")
    .description(
      "per-SIM statement of one customer's invoice: one line per SIM, late usage on its own, a total equal to the invoice quantity",
    )
    .requiredOption("--customer <cus>", "Stripe customer id (cus_…)")
    .option(
      "--period <period>",
      "current, previous, or an invoice id (in_…)",
      parsePeriod,
      "current" as PeriodChoice,
    )
    .addOption(
      new Option("--by <unit>", "one line per SIM for the period, or per SIM and day")
        .choices(["period", "day"])
        .default("period"),
    )
    .option("--format <format>", "text, json or csv", parseFormat, "text" as Format)
    .action(
      async (o: {
        customer: string;
        period: PeriodChoice;
        by: "period" | "day";
        format: Format;
      }) => {
        const { config, opened } = await cliLedger({ stripe: true, db: "read" }, "warn");
        const { ledger } = opened;
        const stripe = createStripe(config);
        let s: Statement;
        try {
          const billing = await refreshBilling({
            ledger,
            stripe,
            eventName: config.STRIPE_METER_EVENT_NAME,
            now: Date.now(),
            dryRun: true,
          });
          const b = billing.get(o.customer);
          if (!b)
            throw new Error(`${o.customer} is not a mapped customer (simmeter customers list)`);
          s = await statement(ledger, stripe, b, o.period, o.by);
        } finally {
          await ledger.admin.close();
        }
        if (o.format === "json") process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
        else if (o.format === "csv") process.stdout.write(statementCsv(s));
        else process.stdout.write(statementText(s));
        if (s.invoice_quantity !== null && s.total !== s.invoice_quantity) process.exitCode = 1;
      },
    );
}
