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
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { withDatabase } from "../../scripts/lib/postgres-server.ts";
import { describeUrl } from "../../src/db/pg/client.ts";
import { BIN, cli, tempDirsRemovedAfterAll } from "../helpers/cli.ts";
import { openTestLedger, testBackend } from "../helpers/ledger.ts";
import { createTestDatabase } from "../helpers/pg.ts";
import { readDb, startSimmeter, waitFor } from "../helpers/process.ts";
import { fixtureEvent, ingestFixture } from "../helpers/seed.ts";

// Commands that only read open the database read-only: they refuse a missing or unmigrated file
// and never create, migrate or write anything. Commands that write refuse a missing file (a
// mistyped DATABASE_PATH must not start a new, empty ledger). Real CLI processes, real files;
// on PostgreSQL (DATABASE_URL) the same refusals of a database that does not exist or is not
// migrated, and reads beside a running service. Most of this file is about SQLite files
// (read-only opening, -wal, -shm, file modes) and runs on SQLite only.

const backend = testBackend();

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

const pgCleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of pgCleanups.splice(0).reverse()) await c();
});

/** one query on `url` (PostgreSQL) */
async function pgQuery(url: string, sql: string, params: unknown[] = []): Promise<unknown[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/** a DATABASE_URL naming a database the run's cluster does not have (PostgreSQL) */
function missingDatabaseUrl(): { url: string; name: string } {
  const name = `nope_${process.pid}_${randomUUID().slice(0, 6)}`;
  return { url: withDatabase(inject("pgAdminUrl"), name), name };
}

/** whether the run's cluster has a database `name` */
async function databaseExists(name: string): Promise<boolean> {
  const rows = await pgQuery(inject("pgAdminUrl"), "select 1 from pg_database where datname = $1", [
    name,
  ]);
  return rows.length > 0;
}

describe("read commands open the database read-only", () => {
  // SQLite: the default path, ./data/simmeter.db; PostgreSQL's counterpart follows.
  it.runIf(backend === "sqlite")(
    "each read command refuses a missing database with a message naming the absolute path and DATABASE_PATH, exits 1, and creates no file or ./data directory in the directory it runs in",
    async () => {
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
    },
    240_000,
  );

  it.runIf(backend === "postgres")(
    "each read command refuses a DATABASE_URL naming a database that does not exist, naming the server and the database, exits 1, and creates neither the database nor a ./data directory",
    async () => {
      const cwd = dir();
      const { url, name } = missingDatabaseUrl();
      for (const args of READ_COMMANDS) {
        const r = await cli(args, { DATABASE_URL: url, DATABASE_PATH: undefined }, cwd);
        expect({ args, code: r.code }).toEqual({ args, code: 1 });
        expect(r.stdout).toBe("");
        expect(r.stderr).toContain(
          `cannot open the PostgreSQL ledger at ${describeUrl(url)}: database "${name}" does not exist`,
        );
      }
      expect(readdirSync(cwd)).toEqual([]);
      expect(await databaseExists(name)).toBe(false);
    },
    240_000,
  );

  // SQLite: a mistyped DATABASE_PATH; PostgreSQL's counterpart follows.
  it.runIf(backend === "sqlite")(
    "commands that write (customers assign, customers import, quarantine requeue) refuse a missing database too and create nothing; jobs failed does not touch the database at all",
    async () => {
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
    },
    120_000,
  );

  it.runIf(backend === "postgres")(
    "commands that write (customers assign, customers import, quarantine requeue) refuse a DATABASE_URL naming a database that does not exist and create nothing; jobs failed does not touch the database at all",
    async () => {
      const d = dir();
      const { url, name } = missingDatabaseUrl();
      const csv = join(d, "c.csv");
      writeFileSync(csv, `sim_sid,stripe_customer_id\n${SIM},cus_A1\n`);
      const env = { DATABASE_URL: url, DATABASE_PATH: undefined, REDIS_URL: inject("redisUrl") };
      for (const args of [
        ["customers", "assign", SIM, "--sim", "--customer", "cus_A1"],
        ["customers", "import", csv],
        ["quarantine", "requeue", "--id", "1"],
      ]) {
        const r = await cli(args, env, d);
        expect({ args, code: r.code }).toEqual({ args, code: 1 });
        // (they migrate first: the migration's connection is refused)
        expect(r.stderr).toContain(
          `cannot connect to PostgreSQL at ${describeUrl(url)} to migrate: database "${name}" does not exist`,
        );
      }
      const jobs = await cli(
        ["jobs", "failed", "--json"],
        { ...env, REDIS_PREFIX: `ro${randomUUID().slice(0, 8)}` },
        d,
      );
      expect(jobs.code, jobs.stderr).toBe(0);
      expect(jobs.stdout).not.toContain("id");
      expect(await databaseExists(name)).toBe(false);
      expect(readdirSync(d)).toEqual(["c.csv"]);
    },
    120_000,
  );

  // SQLite: a file migrated by an older journal; PostgreSQL's counterpart follows.
  it.runIf(backend === "sqlite")(
    "a database older than this simmeter is refused by read commands with the migration count, and is not migrated",
    async () => {
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
    },
  );

  it.runIf(backend === "postgres")(
    "a database with fewer migrations applied than this simmeter ships is refused by read commands with the migration count, and is not migrated",
    async () => {
      // PostgreSQL has one migration so far (drizzle/pg): a database that lacks it, as
      // cli-doctor-pg's empty database.
      const db = await createTestDatabase({ empty: true });
      pgCleanups.push(db.drop);
      const journal = JSON.parse(
        readFileSync(join(ROOT, "drizzle/pg/meta/_journal.json"), "utf8"),
      ) as { entries: { tag: string }[] };
      const total = journal.entries.length;
      const r = await cli(["usage", "--json"], {
        DATABASE_URL: db.url,
        DATABASE_PATH: undefined,
      });
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(
        `the PostgreSQL ledger at ${describeUrl(db.url)} lacks migrations ${journal.entries.map((e) => e.tag).join(", ")} (0 of ${total} applied): start simmeter work (or start) once to apply them`,
      );
      expect(
        await pgQuery(db.url, "select to_regclass('drizzle.__drizzle_migrations')::text as t"),
      ).toEqual([{ t: null }]);
      expect(
        await pgQuery(
          db.url,
          "select count(*)::int as n from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
        ),
      ).toEqual([{ n: 0 }]);
    },
  );

  it("reads work while the service has the database open, and see what it has just counted", async () => {
    const t = await openTestLedger({ file: true });
    const app = await startSimmeter("start", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `ro${randomUUID().slice(0, 8)}`,
      ...t.env,
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
        async () => (await t.sql("select 1 from usage_hourly where bytes != 0")).length === 1,
        "the event counted",
      );
      // SQLite: the database is open in WAL mode (-wal and -shm exist) while the reads run.
      if (t.env.DATABASE_PATH) expect(existsSync(`${t.env.DATABASE_PATH}-wal`)).toBe(true);
      const usage = await cli(["usage", "--by", "hour", "--json"], t.env);
      expect(usage.code, usage.stderr).toBe(0);
      // (Only what it says, not its JSON shape: the sim and its bytes.)
      expect(usage.stdout).toContain(SIM);
      expect(usage.stdout).toMatch(/\b1536\b/);
      const quarantine = await cli(["quarantine", "--json"], t.env);
      expect(quarantine.code, quarantine.stderr).toBe(0);
      expect(quarantine.stdout).not.toContain("EZ");
    } finally {
      await app.stop();
    }
  });

  // About SQLite files (a copy without its -wal).
  it.runIf(backend === "sqlite")(
    "reads a database copied without its -wal file, and leaves the copy's bytes unchanged",
    async () => {
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
    },
  );

  // Needs another user than the file's owner: root (CI containers) runs the CLI as `nobody`, which
  // must be able to run node and read the tree. Anything else says, on the test's output, why the
  // case did not run.
  const asNobody = nobodyCanRun();
  if (asNobody !== true && backend === "sqlite")
    console.warn(`cli-readonly: the read-only-directory case cannot run: ${asNobody}`);
  // About SQLite files (a WAL database's -shm and directory permissions).
  it.skipIf(asNobody !== true || backend !== "sqlite")(
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

  // About SQLite files (DATABASE_PATH naming another kind of file).
  it.runIf(backend === "sqlite")(
    "a file that is not a SQLite database is refused with a message saying so",
    async () => {
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
    },
  );
});
