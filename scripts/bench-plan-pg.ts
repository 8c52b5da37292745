// What a planning chunk's customer lookups cost on PostgreSQL as the fleet history grows
// (docs/design/postgres-ledger.md §4.7): the chunk's usage is resolved (a) over the whole fleet
// histories of its SIMs (fleetsOf, as planning did before fleetsNear) and (b) through
// resolverSteps (fleetsNear, then whole histories only where the rules need them). The ledger: a
// private cluster, --sims SIMs each observed in one assigned fleet every hour for --hours hours
// (sim_fleet_hours holds sims × hours rows), one usage row per SIM in the latest hour (a chunk
// of --sims rows, PLAN_CHUNK_ROWS is 2,000). Both answers are compared before timing.
//
//   npx tsx scripts/bench-plan-pg.ts [--sims 2000] [--hours 24,720,2160] [--runs 5]
//
// Prints, per history length, the median/min/max milliseconds of each way over --runs runs (a
// table for BENCHMARKS.md).
import { parseArgs } from "node:util";
import pg from "pg";
import { resolverOver } from "../src/customers/customers.ts";
import { migratePg } from "../src/db/pg/client.ts";
import { pgPlanOps } from "../src/ledger/pg/plan.ts";
import { runAsync } from "../src/ledger/steps.ts";
import { resolverSteps } from "../src/reporting/plan-steps.ts";
import { startPostgres, withDatabase } from "./lib/postgres-server.ts";

const { values: args } = parseArgs({
  options: {
    sims: { type: "string", default: "2000" },
    hours: { type: "string", default: "24,720,2160" },
    runs: { type: "string", default: "5" },
  },
});
const SIMS = Number(args.sims);
const RUNS = Number(args.runs);
const LENGTHS = (args.hours as string).split(",").map(Number);
for (const n of [SIMS, RUNS, ...LENGTHS])
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive whole number: ${n}`);
const HOUR = 3_600_000;
const END = Date.UTC(2026, 10, 1);
const FLEET = `HF${"a".repeat(32)}`;
const log = (m: string) => process.stderr.write(`[bench-plan-pg] ${m}\n`);

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return {
    median: s[Math.floor(s.length / 2)] as number,
    min: s[0] as number,
    max: s.at(-1) as number,
  };
};
const ms = (x: number) => x.toFixed(1);

const server = await startPostgres();
try {
  const url = withDatabase(server.url, "postgres");
  await migratePg(url);
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  const c = await pool.connect();
  const rows: string[] = [];
  try {
    await c.query(
      `insert into assignments (target_type, target_id, customer_id, effective_from, created_at)
       values ('fleet', $1, 'cus_bench', 0, 0)`,
      [FLEET],
    );
    await c.query(
      `insert into sims (sim_sid, iccid, fleet_sid, account_sid, first_seen_at, last_event_at)
       select 'HS' || lpad(to_hex(i), 32, '0'), lpad(i::text, 20, '8'), $1, 'AC', 0, 0
         from generate_series(1, $2::int) i`,
      [FLEET, SIMS],
    );
    const last = END - HOUR;
    await c.query(
      `insert into usage_hourly (sim_sid, hour, bytes)
       select 'HS' || lpad(to_hex(i), 32, '0'), $1::bigint, 1000 from generate_series(1, $2::int) i`,
      [last, SIMS],
    );
    let loaded = 0;
    for (const hours of LENGTHS) {
      // grow every SIM's history to `hours` observed hours, ending at the usage hour
      await c.query(
        `insert into sim_fleet_hours (sim_sid, hour, fleet_sid)
         select 'HS' || lpad(to_hex(i), 32, '0'), $1::bigint - h::bigint * ${HOUR}, $2
           from generate_series(1, $3::int) i, generate_series($4::int, $5::int - 1) h`,
        [last, FLEET, SIMS, loaded, hours],
      );
      loaded = hours;
      await c.query("analyze");
      log(`${SIMS} SIMs × ${hours} hours = ${SIMS * hours} fleet rows`);
      const ops = pgPlanOps(c);
      const dir = await ops.directory();
      const usage = (
        await c.query<{ simSid: string; hour: number }>(
          `select sim_sid as "simSid", hour from usage_hourly order by sim_sid collate "C"`,
        )
      ).rows;
      const sims = usage.map((u) => u.simSid);
      const whole = async () => {
        const r = resolverOver(dir, await ops.fleetsOf(sims));
        return usage.map((u) => r.resolve(u.simSid, u.hour));
      };
      const near = async () => {
        const r = await runAsync(resolverSteps(dir, usage), ops);
        return usage.map((u) => r.resolve(u.simSid, u.hour));
      };
      const a = await whole();
      const b = await near();
      if (JSON.stringify(a) !== JSON.stringify(b) || a.some((x) => x !== "cus_bench"))
        throw new Error("the two ways resolve the chunk differently");
      const times = { whole: [] as number[], near: [] as number[] };
      for (let i = 0; i < RUNS; i++)
        for (const [k, f] of [
          ["whole", whole],
          ["near", near],
        ] as const) {
          const t = performance.now();
          await f();
          times[k].push(performance.now() - t);
        }
      const w = stats(times.whole);
      const n = stats(times.near);
      const table = (await c.query<{ n: number }>("select count(*)::int as n from sim_fleet_hours"))
        .rows[0]?.n;
      rows.push(
        `| ${hours} | ${table} | ${ms(w.median)} (${ms(w.min)}–${ms(w.max)}) | ${ms(n.median)} (${ms(n.min)}–${ms(n.max)}) | ${(w.median / n.median).toFixed(1)} |`,
      );
    }
  } finally {
    c.release();
    await pool.end();
  }
  process.stdout.write(
    [
      `npx tsx scripts/bench-plan-pg.ts --sims ${SIMS} --hours ${LENGTHS.join(",")} --runs ${RUNS}`,
      "",
      `| hours of history per SIM | sim_fleet_hours rows | whole histories: ms, median (min–max) | fleetsNear: ms, median (min–max) | ratio |`,
      "|---|---|---|---|---|",
      ...rows,
      "",
    ].join("\n"),
  );
} finally {
  await server.stop();
}
