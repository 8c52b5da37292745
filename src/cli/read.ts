import type { Command } from "commander";
import { unmappedUsage } from "../customers/customers.ts";
import {
  type Granularity,
  listAnomalies,
  listEventCounts,
  listQuarantine,
  parseTime,
  queryUsage,
} from "../usage/query.ts";
import { cliContext, printJsonOrTable } from "./context.ts";

export function registerReadCommands(program: Command): void {
  program
    .command("usage")
    .description("per SIM usage per hour, day, UTC month or in total")
    .option("--sim <sid...>", "only these SIM SIDs (HS…)")
    .option("--from <time>", "from this UTC date/time (inclusive), e.g. 2026-11-01")
    .option("--to <time>", "to this UTC date/time (exclusive)")
    .option("--by <granularity>", "hour | day | month | total", "day")
    .option("--unmapped", "only SIMs with usage that no customer assignment covers")
    .option("--json", "print JSON")
    .action(
      (o: {
        sim?: string[];
        from?: string;
        to?: string;
        by: string;
        json?: boolean;
        unmapped?: boolean;
      }) => {
        if (o.unmapped) {
          const { db } = cliContext({}, "warn");
          printJsonOrTable(
            Boolean(o.json),
            unmappedUsage(db),
            "every SIM with usage is mapped to a customer",
          );
          return;
        }
        if (!["hour", "day", "month", "total"].includes(o.by)) {
          throw new Error("--by must be hour, day, month or total");
        }
        const { db } = cliContext({}, "warn");
        const rows = queryUsage(db, {
          granularity: o.by as Granularity,
          ...(o.sim ? { sims: o.sim } : {}),
          ...(o.from ? { from: parseTime(o.from, "--from") } : {}),
          ...(o.to ? { to: parseTime(o.to, "--to") } : {}),
        });
        printJsonOrTable(Boolean(o.json), rows, "no usage recorded for this selection");
      },
    );

  program
    .command("quarantine")
    .description("events that were authenticated but could not be counted, newest first")
    .option("--limit <n>", "rows to show", "50")
    .option("--json", "print JSON (includes the raw event)")
    .action((o: { limit: string; json?: boolean }) => {
      const { db } = cliContext({}, "warn");
      const rows = listQuarantine(db, Number(o.limit));
      if (o.json) {
        printJsonOrTable(true, rows, "");
        return;
      }
      printJsonOrTable(
        false,
        rows.map((r) => ({
          id: r.id,
          received: new Date(r.receivedAt).toISOString(),
          source: r.source,
          event_sid: r.eventSid,
          reason: r.reason.length > 100 ? `${r.reason.slice(0, 100)}…` : r.reason,
        })),
        "quarantine is empty",
      );
    });

  program
    .command("anomalies")
    .description(
      "accounting anomalies: cumulative going down, readings after end, impossible rates",
    )
    .option("--json", "print JSON")
    .action((o: { json?: boolean }) => {
      const { db } = cliContext({}, "warn");
      printJsonOrTable(Boolean(o.json), listAnomalies(db), "no anomalies");
    });

  program
    .command("events")
    .description(
      "non-billing events per SIM per day and type over the last 7 days (rejection storms)",
    )
    .option("--json", "print JSON")
    .action((o: { json?: boolean }) => {
      const { db } = cliContext({}, "warn");
      const rows = listEventCounts(db).map((r) => ({
        ...r,
        day: new Date(r.day).toISOString().slice(0, 10),
      }));
      printJsonOrTable(Boolean(o.json), rows, "no non-billing events in the last 7 days");
    });
}
