// `simmeter customers assign | import | list` through the built binary (npm run build first) on a
// PostgreSQL ledger (DATABASE_URL) and on a SQLite file holding the same usage: every command
// prints the same output and exits with the same code, refusals and re-bills included.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { type CliRun, cli, tempDirsRemovedAfterAll } from "../helpers/cli.ts";
import { createTestDatabase } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const FROM = Date.UTC(2025, 6, 9, 4, 0, 0);
const TO = FROM + 5 * HOUR;
const iso = (ms: number) => new Date(ms).toISOString();

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});
const freshDir = tempDirsRemovedAfterAll("simmeter-pg-customers-cli-");

const ingestSettings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

function jobs(): IngestJobData[] {
  const sim = simulateFleet({ seed: 5, customers: 2, sims: 6, from: FROM, to: TO });
  const events = [...sim.events] as unknown[];
  const out: IngestJobData[] = [];
  for (let i = 0; i < events.length; i += 10) {
    const d: Delivery = {
      id: `cli-d${i}`,
      receivedAt: FROM + i,
      source: "twilio",
      events: events.slice(i, i + 10),
    };
    out.push({ v: 1, deliveries: [d] });
  }
  return out;
}

/** The same usage in a SQLite file and a PostgreSQL database; the SIMs and fleets it holds. */
async function ledgers() {
  const dir = freshDir();
  const dbPath = join(dir, "simmeter.db");
  const db = openDb(dbPath);
  const sqlite = sqliteLedger(db);
  const t = await createTestDatabase();
  cleanup.push(t.drop);
  const pool = createPool(t.url, { role: "test", max: 2 });
  const pg = pgLedger(pool, t.url);
  try {
    for (const job of jobs()) {
      const want = await sqlite.ingestJob(job, ingestSettings, () => TO);
      expect(await pg.ingestJob(job, ingestSettings, () => TO)).toEqual(want);
    }
    const sims = db.$client
      .prepare("select sim_sid, iccid, fleet_sid from sims order by sim_sid")
      .all() as { sim_sid: string; iccid: string; fleet_sid: string }[];
    return { dir, dbPath, url: t.url, sims };
  } finally {
    await sqlite.admin.close();
    await pg.admin.close();
  }
}

/** what a run printed, without what only says this checkout's dist/ is older than its src/ */
const output = (r: CliRun) => ({
  code: r.code,
  stdout: r.stdout,
  stderr: r.stderr.replace(/^simmeter: warning: dist\/ is older than src\/.*\n/m, ""),
});

/** created_at is when each command ran: the same on both once replaced */
const withoutCreatedAt = (stdout: string) =>
  stdout.replace(/"created_at": "[^"]+"/g, '"created_at": "…"');

describe("simmeter customers on PostgreSQL (DATABASE_URL)", () => {
  it("assign, import and list print what they print on SQLite, refusals, re-bills and exit codes included", async () => {
    const l = await ledgers();
    const fleets = [...new Set(l.sims.map((s) => s.fleet_sid))].sort();
    expect(fleets.length).toBeGreaterThanOrEqual(2);
    const [f0, f1] = fleets as [string, string];
    const simA = l.sims.find((s) => s.fleet_sid === f0)?.sim_sid as string;
    const file = (name: string, text: string) => {
      const path = join(l.dir, name);
      writeFileSync(path, text);
      return path;
    };
    const bad = file("bad.csv", `sim_sid,stripe_customer_id\nHSnope,cus_x\n${simA},nope\n`);
    const good = file(
      "good.csv",
      `fleet_sid,stripe_customer_id,effective_from\n${f0},cus_a,${iso(FROM)}\n${f1},cus_c,${iso(FROM)}\n`,
    );
    const move = file(
      "move.csv",
      `fleet_sid,stripe_customer_id,effective_from\n${f1},cus_d,${iso(FROM + 2 * HOUR)}\n`,
    );

    const sqliteEnv = { DATABASE_PATH: l.dbPath, DATABASE_URL: undefined };
    const pgEnv = { DATABASE_URL: l.url, DATABASE_PATH: undefined };
    /** the command on both ledgers: the same output; returns it */
    const both = async (args: string[]) => {
      // Two ledgers, two processes: run side by side.
      const [sqliteRun, pgRun] = await Promise.all([cli(args, sqliteEnv), cli(args, pgEnv)]);
      const want = output(sqliteRun);
      const got = output(pgRun);
      if (args.includes("list") && args.includes("--json")) {
        want.stdout = withoutCreatedAt(want.stdout);
        got.stdout = withoutCreatedAt(got.stdout);
      }
      expect(got, args.join(" ")).toEqual(want);
      return want;
    };

    expect(await both(["customers", "list", "--json"])).toMatchObject({ code: 0, stderr: "" });
    expect(
      await both([
        "customers",
        "assign",
        f0,
        "--fleet",
        "--customer",
        "cus_a",
        "--from",
        iso(FROM),
      ]),
    ).toEqual({ code: 0, stdout: `fleet ${f0} → cus_a from ${iso(FROM)}\n`, stderr: "" });

    // A SIM of that fleet to another customer from an hour it used: refused, then re-billed.
    const simArgs = [
      "customers",
      "assign",
      simA,
      "--sim",
      "--customer",
      "cus_b",
      "--from",
      iso(FROM + 2 * HOUR + 60_000),
    ];
    const refused = await both(simArgs);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toMatch(
      new RegExp(
        `would move \\d+ counted bytes in \\d+ SIM-hour\\(s\\) to another customer:\\n  ${simA} cus_a → cus_b: `,
      ),
    );
    expect(refused.stderr).toMatch(
      /nothing changed; to re-bill that usage, run again with --rebill/,
    );
    const rebilled = await both([...simArgs, "--rebill"]);
    expect(rebilled.code).toBe(0);
    expect(rebilled.stdout).toMatch(
      new RegExp(`^re-billed: ${simA} cus_a → cus_b: \\d+ bytes in \\d+ hour\\(s\\), `),
    );
    expect(rebilled.stdout).toContain(`sim ${simA} → cus_b from ${iso(FROM + 3 * HOUR)}\n`);

    // A usage error before either ledger is opened, and a malformed customer id.
    expect(
      (await both(["customers", "assign", simA, "--sim", "--fleet", "--customer", "cus_b"])).code,
    ).toBe(2);
    expect((await both(["customers", "assign", simA, "--sim", "--customer", "nope"])).code).toBe(1);

    // Imports: bad rows, then a file whose first row is in effect, then the same file again.
    const badRun = await both(["customers", "import", bad]);
    expect(badRun).toMatchObject({ code: 1, stdout: "" });
    expect(badRun.stderr).toContain(`${bad}:2: "HSnope" is not a Super SIM SID`);
    expect(badRun.stderr).toContain("nothing imported: 2 bad row(s)\n");
    expect(await both(["customers", "import", good])).toEqual({
      code: 0,
      stdout: `1 new, 1 unchanged; effective from ${iso(FROM)}\n`,
      stderr: "",
    });
    expect((await both(["customers", "import", good])).stdout).toBe(
      "0 new, 2 unchanged; nothing changed\n",
    );

    // Moving the second fleet from an hour with usage: refused (JSON), then imported with --rebill.
    const refusedImport = await both(["customers", "import", move, "--json"]);
    expect(refusedImport.code).toBe(1);
    const refusedJson = JSON.parse(refusedImport.stdout) as {
      ok: boolean;
      would_move: unknown[];
    };
    expect(refusedJson.ok).toBe(false);
    expect(refusedJson.would_move.length).toBeGreaterThan(0);
    const imported = await both(["customers", "import", move, "--rebill", "--json"]);
    expect(imported.code).toBe(0);
    expect(JSON.parse(imported.stdout)).toMatchObject({
      ok: true,
      new: 1,
      unchanged: 0,
      rebilled: refusedJson.would_move,
      errors: [],
    });

    const list = await both(["customers", "list", "--json"]);
    expect(
      (JSON.parse(list.stdout) as { data: { target_id: string; customer_id: string }[] }).data.map(
        (a) => [a.target_id, a.customer_id],
      ),
    ).toEqual([
      [f0, "cus_a"],
      [simA, "cus_b"],
      [f1, "cus_c"],
      [f1, "cus_d"],
    ]);
    expect((await both(["customers", "list"])).stdout).toContain(`fleet  ${f0}  cus_a`);
    // each command runs twice, a node process each, on a 2-core machine
  }, 300_000);
});
