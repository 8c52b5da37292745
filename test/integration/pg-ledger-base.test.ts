// The PostgreSQL foundation (docs/design/postgres-ledger.md §4.8, §5.4, §6.2) on the run's private
// cluster (test/helpers/global-postgres.ts), nothing mocked: migrations under concurrent start-up,
// the int8 parser, the health ping, URL redaction, and per-test databases cloned from the template.
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { startPostgres } from "../../scripts/lib/postgres-server.ts";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { waitFor } from "../../scripts/lib/wait.ts";
import {
  createPool,
  MIGRATION_LOCK,
  migratePg,
  PG_MIGRATIONS,
  parseInt8,
  pgMigrationStatus,
  pingPg,
  redactUrl,
  shippedPgMigrations,
} from "../../src/db/pg/client.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/pg.ts";

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function database(opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const db = await createTestDatabase(opts);
  cleanup.push(db.drop);
  return db;
}

function pool(url: string, role = "test"): pg.Pool {
  const p = createPool(url, { role, max: 2 });
  cleanup.push(() => p.end());
  return p;
}

async function migrationRows(p: pg.Pool): Promise<{ hash: string; created_at: number }[]> {
  return (
    await p.query<{ hash: string; created_at: number }>(
      "select hash, created_at from drizzle.__drizzle_migrations order by id",
    )
  ).rows;
}

async function tableNames(p: pg.Pool): Promise<string[]> {
  const r = await p.query<{ t: string }>(
    "select table_name as t from information_schema.tables where table_schema = 'public' order by 1",
  );
  return r.rows.map((x) => x.t);
}

/** the backends of `applicationName` waiting for a lock, with what they wait on */
async function waiting(admin: pg.Pool, applicationName: string): Promise<string[]> {
  const r = await admin.query<{ wait_event: string }>(
    "select wait_event from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'",
    [applicationName],
  );
  return r.rows.map((x) => x.wait_event);
}

const expected = shippedPgMigrations();

describe("migratePg", () => {
  it("applies drizzle/pg once when three processes start together on an empty database", async () => {
    const db = await database({ empty: true });
    const p = pool(db.url);
    expect(await tableNames(p)).toEqual([]);
    expect(await pgMigrationStatus(p)).toMatchObject({ applied: 0, pending: ["0000_init"] });

    const results = await Promise.allSettled([1, 2, 3].map(() => migratePg(db.url)));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);

    const rows = await migrationRows(p);
    expect(rows).toHaveLength(expected.length);
    expect(rows.map((r) => r.hash)).toEqual(expected.map((m) => m.hash));
    expect(rows.map((r) => r.created_at)).toEqual(expected.map((m) => m.when));
    expect(await tableNames(p)).toHaveLength(15);
    expect(await pgMigrationStatus(p)).toEqual({
      applied: expected.length,
      expected: expected.length,
      pending: [],
      changed: [],
      unknown: 0,
    });
    // nobody is left holding the lock
    const locks = await p.query("select 1 from pg_locks where locktype = 'advisory'");
    expect(locks.rowCount).toBe(0);
  });

  it("finds nothing to apply on the migrated template's clone", async () => {
    const db = await database();
    await migratePg(db.url);
    const p = pool(db.url);
    expect(await migrationRows(p)).toHaveLength(expected.length);
  });

  it("reports a migration it does not know, and a changed hash", async () => {
    const db = await database();
    const p = pool(db.url);
    await p.query(
      "insert into drizzle.__drizzle_migrations (hash, created_at) values ('newer', $1)",
      [expected.at(-1)!.when + 1000],
    );
    expect(await pgMigrationStatus(p)).toMatchObject({
      applied: expected.length,
      unknown: 1,
      changed: [],
    });
    await p.query("delete from drizzle.__drizzle_migrations where hash = 'newer'");
    await p.query("update drizzle.__drizzle_migrations set hash = 'edited'");
    expect(await pgMigrationStatus(p)).toMatchObject({ unknown: 0, changed: ["0000_init"] });
  });

  // Both runs below are made deterministic by a gate: a transaction that executes the migration's
  // first statement and stays open, so whichever migrator reaches that statement waits on it.
  // Each migrator is started only once the previous one is seen waiting (pg_stat_activity), so
  // both have read "nothing applied yet" before the gate opens (rolls back).
  const firstStatement = readFileSync(join(PG_MIGRATIONS, `${expected[0]!.tag}.sql`), "utf8")
    .split("--> statement-breakpoint")[0]!
    .trim();

  /** drizzle's migrate() on its own connection, without the advisory lock */
  function unlocked(url: string, name: string): () => Promise<void> {
    return async () => {
      const client = new pg.Client({ connectionString: url, application_name: name });
      await client.connect();
      try {
        await migrate(drizzle(client), { migrationsFolder: PG_MIGRATIONS });
      } finally {
        await client.end();
      }
    };
  }

  type Runner = { name: string; run: () => Promise<void>; waitsOn: string };

  /** starts the runners one by one behind the gate, each once the previous one waits; opens it */
  async function gated(
    url: string,
    runners: Runner[],
    whileWaiting: (p: pg.Pool) => Promise<void> = async () => {},
  ): Promise<{ results: PromiseSettledResult<void>[]; p: pg.Pool }> {
    const p = pool(url);
    const gate = new pg.Client({ connectionString: url });
    await gate.connect();
    try {
      await gate.query("begin");
      await gate.query(firstStatement);
      const running: Promise<void>[] = [];
      for (const r of runners) {
        const started = r.run();
        started.catch(() => {});
        running.push(started);
        await waitFor(
          async () => (await waiting(p, r.name)).includes(r.waitsOn),
          `${r.name} waiting on ${r.waitsOn}`,
          10_000,
          10,
        );
      }
      await whileWaiting(p);
      await gate.query("rollback");
      return { results: await Promise.allSettled(running), p };
    } finally {
      await gate.end();
    }
  }

  it("without the advisory lock, two migrators that both read 'nothing applied' collide", async () => {
    const { url } = await database({ empty: true });
    const { results, p } = await gated(url, [
      { name: "unlocked-a", run: unlocked(url, "unlocked-a"), waitsOn: "transactionid" },
      { name: "unlocked-b", run: unlocked(url, "unlocked-b"), waitsOn: "transactionid" },
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const failure = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    const cause = ((failure.reason as { cause?: Error }).cause ?? failure.reason) as Error;
    expect(cause.message).toMatch(/already exists|duplicate key/);
    expect(await migrationRows(p)).toHaveLength(expected.length);
  });

  it("with it (migratePg), the second waits for pg_advisory_lock(0x534D4C47, 0), then finds nothing to apply", async () => {
    const { url } = await database({ empty: true });
    const migrator = (name: string) => () => migratePg(url, { applicationName: name });
    const { results, p } = await gated(
      url,
      [
        { name: "locked-a", run: migrator("locked-a"), waitsOn: "transactionid" },
        { name: "locked-b", run: migrator("locked-b"), waitsOn: "advisory" },
      ],
      async (admin) => {
        const locks = await admin.query<{ app: string; granted: boolean }>(
          `select a.application_name as app, l.granted from pg_locks l
             join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.classid = $1 and l.objid = $2 and l.objsubid = 2
            order by app`,
          [...MIGRATION_LOCK],
        );
        expect(locks.rows).toEqual([
          { app: "locked-a", granted: true },
          { app: "locked-b", granted: false },
        ]);
      },
    );
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled"]);
    expect(await migrationRows(p)).toHaveLength(expected.length);
    expect(await tableNames(p)).toHaveLength(15);
  });
});

describe("startPostgres", () => {
  it("refuses, with the install command, when the server binaries are missing", async () => {
    const saved = process.env.PG_BIN;
    process.env.PG_BIN = "/nonexistent/postgresql/bin";
    try {
      await expect(startPostgres()).rejects.toThrow(/apt-get install -y postgresql/);
    } finally {
      if (saved === undefined) delete process.env.PG_BIN;
      else process.env.PG_BIN = saved;
    }
  });
});

describe("the int8 parser", () => {
  it("gives Numbers up to 2^53 - 1 and throws, never rounds, beyond", async () => {
    const { url } = await database();
    const p = pool(url);
    const max = Number.MAX_SAFE_INTEGER;
    const r = await p.query<{ a: number; b: number; c: number }>(
      "select $1::bigint as a, $2::bigint as b, count(*) as c from meta",
      [max, -max],
    );
    expect(r.rows[0]).toEqual({ a: max, b: -max, c: 0 });
    await expect(p.query("select (2::bigint ^ 53)::bigint as v")).rejects.toThrow(
      /9007199254740992 is beyond Number.MAX_SAFE_INTEGER/,
    );
    await expect(p.query("select -(2::bigint ^ 53)::bigint as v")).rejects.toThrow(RangeError);
    // through a drizzle bigint column too, and the pool still works afterwards
    await p.query("insert into meta (key, value) values ('big', 9007199254740993)");
    await expect(p.query("select value from meta where key = 'big'")).rejects.toThrow(
      /9007199254740993/,
    );
    expect((await p.query("select 1::bigint as one")).rows).toEqual([{ one: 1 }]);
    expect(() => parseInt8("9007199254740992")).toThrow(RangeError);
    expect(parseInt8("-9007199254740991")).toBe(-max);
  });
});

describe("createPool", () => {
  it("names the session simmeter-<role> and sets its timeouts", async () => {
    const { url } = await database();
    const p = createPool(url, {
      role: "work",
      max: 1,
      statementTimeoutMs: 250,
      lockTimeoutMs: 567,
      idleInTransactionTimeoutMs: 8900,
    });
    cleanup.push(() => p.end());
    const r = await p.query(
      `select current_setting('application_name') as app,
              current_setting('statement_timeout') as st,
              current_setting('lock_timeout') as lt,
              current_setting('idle_in_transaction_session_timeout') as it`,
    );
    expect(r.rows[0]).toEqual({ app: "simmeter-work", st: "250ms", lt: "567ms", it: "8900ms" });
    await expect(p.query("select pg_sleep(5)")).rejects.toThrow(/statement timeout/);
  });
});

describe("pingPg", () => {
  it("answers ok from a running server", async () => {
    const { url } = await database();
    expect(await pingPg(pool(url), 2000)).toBe("ok");
  });

  it("names the server, never the password, when nothing listens", async () => {
    const port = await freePort();
    const p = pool(`postgres://simmeter:s3cr3t-pw@127.0.0.1:${port}/ledger`);
    const reason = await pingPg(p, 5000);
    expect(reason).not.toBe("ok");
    expect(reason).toContain(`127.0.0.1:${port}/ledger`);
    expect(reason).toContain("ECONNREFUSED");
    expect(reason).not.toContain("s3cr3t-pw");
  });

  it("gives up after timeoutMs when the server accepts but never answers", async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    cleanup.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    });
    const { port } = silent.address() as net.AddressInfo;
    const p = createPool(`postgres://simmeter:s3cr3t-pw@127.0.0.1:${port}/ledger`, {
      role: "test",
      connectTimeoutMs: 1000,
    });
    const started = Date.now();
    const reason = await pingPg(p, 200);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(reason).toBe(`PostgreSQL at 127.0.0.1:${port}/ledger did not answer within 200 ms`);
    // the abandoned connect fails by connectTimeoutMs; then the pool ends cleanly
    await new Promise((r) => setTimeout(r, 1100));
    await p.end();
  });
});

describe("redactUrl", () => {
  it("replaces the password, in the userinfo or a parameter, and keeps the rest", () => {
    expect(redactUrl("postgres://simmeter:s3cr3t@db.internal:5433/ledger?sslmode=require")).toBe(
      "postgres://simmeter:***@db.internal:5433/ledger?sslmode=require",
    );
    expect(redactUrl("postgresql://u@h/db?password=s3cr3t")).toBe(
      "postgresql://u@h/db?password=***",
    );
    expect(redactUrl("postgres://u@h/db")).toBe("postgres://u@h/db");
    expect(redactUrl("postgres://u:p%40ss@h/db")).not.toContain("p%40ss");
  });
});

describe("createTestDatabase", () => {
  it("clones the migrated template per test, isolated from each other, and drops it with its sessions", async () => {
    const a = await createTestDatabase();
    const b = await createTestDatabase();
    cleanup.push(a.drop, b.drop);
    expect(a.name).toMatch(new RegExp(`^t_${process.pid}_\\d+$`));
    expect(a.url).not.toBe(b.url);
    const pa = pool(a.url);
    const pb = pool(b.url);
    for (const p of [pa, pb]) {
      expect(await pgMigrationStatus(p)).toMatchObject({ applied: expected.length, pending: [] });
      expect(await tableNames(p)).toHaveLength(15);
    }
    await pa.query("insert into meta (key, value) values ('seq', 42)");
    expect((await pa.query("select value from meta")).rows).toEqual([{ value: 42 }]);
    expect((await pb.query("select value from meta")).rows).toEqual([]);

    // an open session does not stop the drop
    await pa.query("select 1");
    await a.drop();
    const admin = new pg.Client({ connectionString: inject("pgAdminUrl") });
    await admin.connect();
    try {
      const left = await admin.query("select datname from pg_database where datname = $1", [
        a.name,
      ]);
      expect(left.rowCount).toBe(0);
    } finally {
      await admin.end();
    }
    await a.drop(); // twice is harmless
  });
});
