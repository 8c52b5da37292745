import { readFileSync } from "node:fs";
import type { Command } from "commander";
import {
  assignCustomer,
  describeMoves,
  InputError,
  importCustomersCsv,
  listAssignments,
  previewMoves,
} from "../customers/customers.ts";
import type { TargetType } from "../customers/resolve.ts";
import { parseTime } from "../usage/query.ts";
import { cliContext, printJsonOrTable } from "./context.ts";

export function registerCustomerCommands(program: Command): void {
  const customers = program
    .command("customers")
    .description("map SIMs, ICCIDs and fleets to Stripe customers");
  customers
    .command("assign")
    .description(
      "assign a SIM (--sim), ICCID (--iccid) or fleet (--fleet) to a Stripe customer from a time on",
    )
    .argument("<id>", "HS… SIM SID, ICCID, or HF… Fleet SID")
    .option("--sim", "ID is a Super SIM SID")
    .option("--iccid", "ID is an ICCID")
    .option("--fleet", "ID is a Fleet SID (a SIM's own assignment wins over its fleet's)")
    .requiredOption("--customer <cus>", "Stripe customer id (cus_…)")
    .option(
      "--from <time>",
      "effective time, ISO 8601, UTC without an offset (default now); applies from the first whole hour at or after it",
    )
    .option(
      "--rebill",
      "allow moving usage already attributed to another customer to this one (prints what moves)",
    )
    .action(
      (
        id: string,
        o: {
          sim?: boolean;
          iccid?: boolean;
          fleet?: boolean;
          customer: string;
          from?: string;
          rebill?: boolean;
        },
      ) => {
        const kinds = (["sim", "iccid", "fleet"] as const).filter((k) => o[k]);
        if (kinds.length !== 1) throw new InputError("give exactly one of --sim, --iccid, --fleet");
        const { db } = cliContext({}, "warn");
        const input = {
          targetType: kinds[0] as TargetType,
          targetId: id,
          customerId: o.customer,
          ...(o.from ? { effectiveFrom: parseTime(o.from, "--from") } : {}),
        };
        const now = Date.now();
        const moves = o.rebill ? previewMoves(db, [input], now) : [];
        const a = assignCustomer({ db, now, rebill: Boolean(o.rebill), input });
        for (const line of describeMoves(moves)) process.stdout.write(`re-billed: ${line}\n`);
        process.stdout.write(
          `${a.targetType} ${a.targetId} → ${a.customerId} from ${new Date(a.effectiveFrom).toISOString()}\n`,
        );
      },
    );
  customers
    .command("import")
    .description(
      "import assignments from CSV: header sim_sid|sim_iccid|fleet_sid, stripe_customer_id[, effective_from]; all rows or none",
    )
    .argument("<file>", "CSV file")
    .option("--rebill", "allow rows that move usage already attributed to another customer")
    .action((file: string, o: { rebill?: boolean }) => {
      const { db } = cliContext({}, "warn");
      const r = importCustomersCsv({
        db,
        csv: readFileSync(file, "utf8"),
        now: Date.now(),
        rebill: Boolean(o.rebill),
      });
      for (const line of r.errors.length === 0 ? describeMoves(r.moves) : [])
        process.stdout.write(`re-billed: ${line}\n`);
      if (r.errors.length > 0) {
        for (const e of r.errors)
          process.stderr.write(e.line > 0 ? `${file}:${e.line}: ${e.message}\n` : `${e.message}\n`);
        process.stderr.write(`nothing imported: ${r.errors.length} bad row(s)\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`imported ${r.imported} assignment(s)\n`);
    });
  customers
    .command("list")
    .description("list assignments")
    .option("--json", "print JSON")
    .action((o: { json?: boolean }) => {
      const { db } = cliContext({}, "warn");
      const rows = listAssignments(db).map((a) => ({
        type: a.targetType,
        id: a.targetId,
        customer: a.customerId,
        from: new Date(a.effectiveFrom).toISOString(),
      }));
      printJsonOrTable(
        Boolean(o.json),
        rows,
        "no assignments: simmeter customers assign --sim HS… --customer cus_…",
      );
    });
}
