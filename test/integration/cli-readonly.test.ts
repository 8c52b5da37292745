import { spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { describe, expect, inject, it } from "vitest";
import { BIN, cli, tempDirsRemovedAfterAll } from "../helpers/cli.ts";
import { readDb, startSimmeter, waitFor } from "../helpers/process.ts";
import { fixtureEvent, ingestFixture } from "../helpers/seed.ts";

// Commands that only read open the database read-only: they refuse a missing or unmigrated file
// and never create, migrate or write anything. Commands that write refuse a missing file (a
// mistyped DATABASE_PATH must not start a new, empty ledger). Real CLI processes, real files.

const ROOT = resolve(import.meta.dirname, "../..");
const SIM = "HS2f71995b834d803ff5376799ba59bd1d";

const dir = tempDirsRemovedAfterAll("simmeter-readonly-");

/** true when this process can run the CLI as `nobody`, else why not. */
function nobodyCanRun(): true | string {
  if (process.getuid?.() !== 0) return "the tests do not run as root";
  const r = spawnSync(
    process.execPath,
    ["-e", `require("node:fs").accessSync(${JSON.stringify(BIN)})`],
    {
      uid: 65534,
      gid: 65534,
    },
  );
  return r.status === 0
    ? true
    : `nobody cannot run ${process.execPath} or read ${BIN} (${r.error?.message ?? `exit ${r.status}`}): clone the repository where other users can read it`;
}

/** A database with one counted session (1536 bytes in 2022-12-14T13:00Z), closed (so checkpointed). */
const seeded = (path: string) => ingestFixture(path, "d1");

const sha = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

const READ_COMMANDS = [
  ["usage"],
  ["usage", "--unmapped"],
  ["quarantine"],
  ["anomalies"],
  ["events"],
  ["customers", "list"],
  ["report", "--status"],
  ["report", "--dry-run"],
];

describe("read commands open the database read-only", () => {
  it("each read command refuses a missing database with a message naming the absolute path and DATABASE_PATH, exits 1, and creates no file or ./data directory in the directory it runs in", async () => {
    const cwd = dir();
    for (const args of READ_COMMANDS) {
      // No DATABASE_PATH: the default, ./data/simmeter.db, relative to where the command runs.
      const r = await cli(args, { DATABASE_PATH: undefined }, cwd);
      expect({ args, code: r.code }).toEqual({ args, code: 1 });
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(
        `no database at ${join(cwd, "data/simmeter.db")}: check DATABASE_PATH (the worker creates it on first start)`,
      );
    }
    expect(readdirSync(cwd)).toEqual([]);
  }, 240_000);

  it("commands that write (customers assign, customers import, quarantine requeue) refuse a missing database too and create nothing; jobs failed does not touch the database at all", async () => {
    const d = dir();
    const dbPath = join(d, "typo", "simmeter.db");
    const csv = join(d, "c.csv");
    writeFileSync(csv, `sim_sid,stripe_customer_id\n${SIM},cus_A1\n`);
    const env = { DATABASE_PATH: dbPath, REDIS_URL: inject("redisUrl") };
    for (const args of [
      ["customers", "assign", SIM, "--sim", "--customer", "cus_A1"],
      ["customers", "import", csv],
      ["quarantine", "requeue", "--id", "1"],
    ]) {
      const r = await cli(args, env);
      expect({ args, code: r.code }).toEqual({ args, code: 1 });
      expect(r.stderr).toContain(`no database at ${dbPath}: check DATABASE_PATH`);
    }
    const jobs = await cli(["jobs", "failed", "--json"], {
      ...env,
      REDIS_PREFIX: `ro${randomUUID().slice(0, 8)}`,
    });
    expect(jobs.code, jobs.stderr).toBe(0);
    expect(jobs.stdout).not.toContain("id");
    expect(existsSync(join(d, "typo"))).toBe(false);
  }, 120_000);

  it("a database older than this simmeter is refused by read commands with the migration count, and is not migrated", async () => {
    const d = dir();
    // Migrations as an older simmeter shipped them: the first four of the journal.
    const older = join(d, "drizzle-old");
    cpSync(join(ROOT, "drizzle"), older, { recursive: true });
    const journalPath = join(older, "meta/_journal.json");
    const journal = JSON.parse(readFileSync(journalPath, "utf8")) as { entries: unknown[] };
    const total = journal.entries.length;
    journal.entries = journal.entries.slice(0, 4);
    writeFileSync(journalPath, JSON.stringify(journal));
    const dbPath = join(d, "old.db");
    const sqlite = new Database(dbPath);
    migrate(drizzle(sqlite), { migrationsFolder: older });
    sqlite.close();
    const before = sha(dbPath);

    const r = await cli(["usage", "--json"], { DATABASE_PATH: dbPath });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(
      `database at ${dbPath} is older than this simmeter (4 of ${total} migrations); start the worker once to migrate`,
    );
    expect(readDb(dbPath, "select hash from __drizzle_migrations")).toHaveLength(4);
    expect(sha(dbPath)).toBe(before);
  });

  it("reads work while the service has the database open, and see what it has just counted", async () => {
    const d = dir();
    const dbPath = join(d, "live.db");
    const app = await startSimmeter("start", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `ro${randomUUID().slice(0, 8)}`,
      DATABASE_PATH: dbPath,
      ALLOW_UNSIGNED: "true",
      RETENTION_DAYS: "100000",
    });
    try {
      const res = await fetch(`${app.url}/webhooks/event-streams`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify([fixtureEvent()]),
      });
      expect(res.status).toBe(200);
      await waitFor(
        () => readDb(dbPath, "select 1 from usage_hourly where bytes != 0").length === 1,
        "the event counted",
      );
      // The service holds the database open in WAL mode: -wal and -shm exist.
      expect(existsSync(`${dbPath}-wal`)).toBe(true);
      const usage = await cli(["usage", "--by", "hour", "--json"], { DATABASE_PATH: dbPath });
      expect(usage.code, usage.stderr).toBe(0);
      // (Only what it says, not its JSON shape: the sim and its bytes.)
      expect(usage.stdout).toContain(SIM);
      expect(usage.stdout).toMatch(/\b1536\b/);
      const quarantine = await cli(["quarantine", "--json"], { DATABASE_PATH: dbPath });
      expect(quarantine.code, quarantine.stderr).toBe(0);
      expect(quarantine.stdout).not.toContain("EZ");
    } finally {
      await app.stop();
    }
  });

  it("reads a database copied without its -wal file, and leaves the copy's bytes unchanged", async () => {
    const d = dir();
    const original = join(d, "a.db");
    seeded(original);
    const copyDir = join(d, "copy");
    mkdirSync(copyDir);
    const copy = join(copyDir, "backup.db");
    copyFileSync(original, copy);
    expect(existsSync(`${copy}-wal`)).toBe(false);
    const before = sha(copy);
    const r = await cli(["usage", "--by", "total", "--json"], { DATABASE_PATH: copy });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(SIM);
    expect(r.stdout).toMatch(/\b1536\b/);
    expect(sha(copy)).toBe(before);
  });

  // Needs another user than the file's owner: root (CI containers) runs the CLI as `nobody`, which
  // must be able to run node and read the tree. Anything else says, on the test's output, why the
  // case did not run.
  const asNobody = nobodyCanRun();
  if (asNobody !== true)
    console.warn(`cli-readonly: the read-only-directory case cannot run: ${asNobody}`);
  it.skipIf(asNobody !== true)(
    "a reader without write access to the directory of a database with no -shm file is told why it cannot read it",
    async () => {
      const d = dir();
      chmodSync(d, 0o755);
      const path = join(d, "a.db");
      seeded(path);
      expect(existsSync(`${path}-shm`)).toBe(false);
      const nobody = { uid: 65534, gid: 65534 };
      const r = await cli(["usage"], { DATABASE_PATH: path, HOME: d }, d, nobody);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot read the database at ${path}`);
      expect(r.stderr).toContain(
        `a read-only reader of a WAL database needs its -wal and -shm files, or write access to ${d} to create them`,
      );
    },
  );

  it("a file that is not a SQLite database is refused with a message saying so", async () => {
    const d = dir();
    const path = join(d, "notes.txt");
    writeFileSync(
      path,
      "this is not a database, it is a note to self about DATABASE_PATH\n".repeat(20),
    );
    const before = sha(path);
    const r = await cli(["customers", "list"], { DATABASE_PATH: path });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path} is not a SQLite database: check DATABASE_PATH`);
    expect(sha(path)).toBe(before);
  });
});
