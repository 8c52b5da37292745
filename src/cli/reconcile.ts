// `simmeter reconcile`: counted vs reported vs Stripe's meter summaries per customer and hour
// (--repair sends the correcting differences), or invoice parity by billing period (--period).
import { type Command, InvalidArgumentError } from "commander";
import { HOUR_MS, hourStart } from "../accounting/buckets.ts";
import type { PeriodChoice } from "../billing/parity.ts";
import { MissingMeterError } from "../billing/subscriptions.ts";
import type { Config } from "../config.ts";
import type { Ledger } from "../ledger/port.ts";
import { STRIPE_BACKDATE_MS } from "../reporting/plan.ts";
import {
  hasDrift,
  reconcile,
  recordStripeDifferences,
  stripeDifferences,
} from "../reporting/reconcile.ts";
import { createStripe } from "../reporting/stripe.ts";
import { findMeter } from "../reporting/stripe-setup.ts";
import { iso, snakeKeys } from "../views/json.ts";
import { type Format, parseFormat, parsePeriod, reconcilePeriod } from "./billing.ts";
import { cliLedger, printJsonOrTable, table, timeOption, UsageError } from "./context.ts";
import { reportPass } from "./report.ts";

export function registerReconcileCommand(program: Command): void {
  program
    .command("reconcile")
    .description(
      "per customer: counted vs reported vs Stripe's meter summaries; exits 1 on any drift",
    )
    .option("--from <time>", "UTC start (default: 35 days ago)", timeOption("--from"))
    .option(
      "--to <time>",
      "UTC end, exclusive (default: the end of the current hour)",
      timeOption("--to"),
    )
    .option(
      "--repair",
      "record each settled hour where Stripe holds another amount than the rows marked sent, then send the correcting difference under a new identifier",
    )
    .option(
      "--settle-minutes <n>",
      "with --repair: only hours with nothing pending or sent in the last N minutes",
      (v: string) => {
        if (!/^\d+$/.test(v))
          throw new InvalidArgumentError(`${JSON.stringify(v)} is not a whole number of minutes`);
        return Number(v);
      },
      10,
    )
    .option(
      "--period <period>",
      "invoice parity instead: current, previous or an invoice id (in_…), per customer by its own billing period",
      parsePeriod,
    )
    .option("--format <format>", "with --period: text, json or csv", parseFormat)
    .option("--json", "print JSON")
    .action(
      async (o: {
        from?: number;
        to?: number;
        json?: boolean;
        repair?: boolean;
        settleMinutes: number;
        period?: PeriodChoice;
        format?: Format;
      }) => {
        if (o.period !== undefined && (o.repair || o.from !== undefined || o.to !== undefined))
          throw new UsageError("--period cannot be combined with --from, --to or --repair");
        if (o.format !== undefined && o.period === undefined)
          throw new UsageError("--format goes with --period (use --json otherwise)");
        const { config, opened } = await cliLedger(
          { stripe: true, db: o.repair ? "write" : "read" },
          "warn",
        );
        const { ledger } = opened;
        if (o.period !== undefined) {
          try {
            await reconcilePeriod(config, ledger, o.period, o.format ?? (o.json ? "json" : "text"));
          } finally {
            await ledger.admin.close();
          }
          return;
        }
        const now = Date.now();
        const from = hourStart(o.from ?? now - STRIPE_BACKDATE_MS + HOUR_MS);
        const to = hourStart(o.to !== undefined ? o.to + HOUR_MS - 1 : now + HOUR_MS);
        const stripe = createStripe(config);
        let rows: Awaited<ReturnType<typeof reconcile>>;
        try {
          const meter = await findMeter(stripe, config.STRIPE_METER_EVENT_NAME);
          if (!meter) throw new MissingMeterError(config.STRIPE_METER_EVENT_NAME);
          if (o.repair) {
            const settleMs = o.settleMinutes * 60_000;
            await repair(config, { ledger, stripe, meterId: meter.id, from, to, now, settleMs }, o);
            return;
          }
          rows = await reconcile({ ledger, stripe, meterId: meter.id, from, to });
        } finally {
          await ledger.admin.close();
        }
        printJsonOrTable(
          Boolean(o.json),
          rows,
          `nothing counted or reported between ${iso(from)} and ${iso(to)}`,
        );
        if (hasDrift(rows)) {
          process.stderr.write(
            "drift found: unreported = counted − reported to Stripe; stripeDrift = sent − Stripe's summary (simmeter reconcile --repair corrects settled differences)\n",
          );
          process.exitCode = 1;
        }
      },
    );
}

/** reconcile --repair: record what Stripe really holds, then send the difference. */
async function repair(
  config: Config,
  scope: Parameters<typeof stripeDifferences>[0] & { ledger: Ledger },
  o: { json?: boolean },
): Promise<void> {
  const { ledger } = scope;
  const diffs = await stripeDifferences(scope);
  const shown = diffs.map((d) => ({
    customer: d.customer,
    hour: iso(d.hour),
    bucket: iso(d.bucket),
    stripe: d.stripe,
    sent: d.sent,
    difference: d.difference,
  }));
  if (diffs.length === 0) {
    if (o.json) process.stdout.write(`${JSON.stringify({ differences: [], report: null })}\n`);
    else process.stdout.write("no settled difference between Stripe and the outbox\n");
    return;
  }
  await recordStripeDifferences(ledger, diffs, scope.now);
  const s = await reportPass(config, ledger, scope.stripe);
  if (o.json) {
    process.stdout.write(
      `${JSON.stringify(snakeKeys({ differences: shown, report: s }), null, 2)}\n`,
    );
  } else {
    process.stdout.write(
      `Stripe differs from the outbox in ${diffs.length} hour(s):\n${table(shown)}\n`,
    );
    process.stdout.write(
      `recorded what Stripe holds; sent ${s.sent} correcting event(s) under new identifiers${s.stillPending ? `, ${s.stillPending} still pending` : ""}\n`,
    );
  }
  if (s.fatal || s.failed > 0 || s.stillPending > 0) process.exitCode = 1;
}
