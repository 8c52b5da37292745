import { readFileSync } from "node:fs";
import type { Command } from "commander";
import {
  assignCustomer,
  describeMoves,
  type ImportResult,
  importCustomersCsv,
  type Move,
} from "../customers/customers.ts";
import type { TargetType } from "../customers/resolve.ts";
import { assignmentPage } from "../views/customers.ts";
import { cliLedger, collectList, printList, timeOption, UsageError } from "./context.ts";

const iso = (ms: number) => new Date(ms).toISOString();

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
      timeOption("--from"),
    )
    .option(
      "--rebill",
      "allow moving usage already attributed to another customer to this one (prints what moves)",
    )
    .action(
      async (
        id: string,
        o: {
          sim?: boolean;
          iccid?: boolean;
          fleet?: boolean;
          customer: string;
          from?: number;
          rebill?: boolean;
        },
      ) => {
        const kinds = (["sim", "iccid", "fleet"] as const).filter((k) => o[k]);
        if (kinds.length !== 1) throw new UsageError("give exactly one of --sim, --iccid, --fleet");
        // A mistyped DATABASE_PATH must not start a new, empty ledger: the file must exist.
        const { ledger } = (await cliLedger({ db: "write" }, "warn")).opened;
        try {
          const input = {
            targetType: kinds[0] as TargetType,
            targetId: id,
            customerId: o.customer,
            ...(o.from !== undefined ? { effectiveFrom: o.from } : {}),
          };
          const now = Date.now();
          // Without --rebill an assignment that moves usage is refused: the moves are only ever
          // the ones a re-bill made, in the same transaction.
          const { assignment: a, moves } = await assignCustomer({
            ledger,
            now,
            rebill: Boolean(o.rebill),
            input,
          });
          for (const line of describeMoves(moves)) process.stdout.write(`re-billed: ${line}\n`);
          process.stdout.write(
            `${a.targetType} ${a.targetId} → ${a.customerId} from ${iso(a.effectiveFrom)}\n`,
          );
        } finally {
          await ledger.admin.close();
        }
      },
    );
  customers
    .command("import")
    .description(
      "import assignments from CSV: header sim_sid|sim_iccid|fleet_sid, stripe_customer_id[, effective_from]; all rows or none, every bad row reported; rows already in effect are unchanged, so importing a file twice adds nothing",
    )
    .argument("<file>", "CSV file")
    .option("--rebill", "allow rows that move usage already attributed to another customer")
    .option("--json", "print a JSON summary")
    .action(async (file: string, o: { rebill?: boolean; json?: boolean }) => {
      let csv: string;
      try {
        csv = readFileSync(file, "utf8");
      } catch (err) {
        throw new Error(
          `${file}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`,
        );
      }
      const { ledger } = (await cliLedger({ db: "write" }, "warn")).opened;
      let r: ImportResult;
      try {
        r = await importCustomersCsv({ ledger, csv, now: Date.now(), rebill: Boolean(o.rebill) });
      } finally {
        await ledger.admin.close();
      }
      if (r.errors.length > 0) process.exitCode = 1;
      if (o.json) {
        process.stdout.write(`${JSON.stringify(importJson(r), null, 2)}\n`);
        return;
      }
      if (r.errors.length > 0) {
        for (const e of r.errors)
          process.stderr.write(e.line > 0 ? `${file}:${e.line}: ${e.message}\n` : `${e.message}\n`);
        const bad = new Set(r.errors.filter((e) => e.line > 0).map((e) => e.line)).size;
        process.stderr.write(
          bad > 0 ? `nothing imported: ${bad} bad row(s)\n` : "nothing imported\n",
        );
        return;
      }
      for (const line of describeMoves(r.moves)) process.stdout.write(`re-billed: ${line}\n`);
      process.stdout.write(`${importSummary(r)}\n`);
    });
  customers
    .command("list")
    .description("list assignments")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }) => {
      const { ledger } = (await cliLedger({ db: "read" }, "warn")).opened;
      try {
        const all = await ledger.assignments.list();
        printList(
          Boolean(o.json),
          collectList((page) => assignmentPage(all, page)),
          "no assignments: simmeter customers assign --sim HS… --customer cus_…",
          (rows) =>
            rows.map((a) => ({
              type: a.target_type,
              id: a.target_id,
              customer: a.customer_id,
              from: a.effective_from,
            })),
        );
      } finally {
        await ledger.admin.close();
      }
    });
}

/** "5 new, 3 unchanged; effective from 2026-11-20T11:00:00.000Z" */
export function importSummary(r: ImportResult): string {
  const counts = `${r.imported} new, ${r.unchanged} unchanged`;
  const [first] = r.effectiveFrom;
  if (first === undefined) return `${counts}; nothing changed`;
  const n = r.effectiveFrom.length;
  return `${counts}; effective from ${iso(first)}${n > 1 ? ` (the earliest of ${n} effective times)` : ""}`;
}

const snakeMove = (m: Move) => ({
  sim_sid: m.simSid,
  hour: iso(m.hour),
  bytes: m.bytes,
  from_customer: m.from,
  to_customer: m.to,
});

function importJson(r: ImportResult): Record<string, unknown> {
  const ok = r.errors.length === 0;
  return {
    ok,
    new: r.imported,
    unchanged: r.unchanged,
    effective_from: r.effectiveFrom.map(iso),
    ...(ok ? { rebilled: r.moves.map(snakeMove) } : { would_move: r.moves.map(snakeMove) }),
    errors: r.errors.map((e) => ({ line: e.line > 0 ? e.line : null, message: e.message })),
  };
}
