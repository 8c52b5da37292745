import pg from "pg";
import { inject } from "vitest";
import { withDatabase } from "../../scripts/lib/postgres-server.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { TEMPLATE_DATABASE } from "./global-postgres.ts";

export type TestDatabase = {
  /** URL of the new database (superuser postgres on the run's private cluster) */
  url: string;
  name: string;
  /** drops the database, closing whatever is still connected to it */
  drop: () => Promise<void>;
};

let admin: pg.Pool | undefined;
let seq = 0;

/** one connection per test worker to the cluster's postgres database, for CREATE/DROP DATABASE */
function adminPool(): pg.Pool {
  admin ??= new pg.Pool({ connectionString: inject("pgAdminUrl"), max: 1, allowExitOnIdle: true });
  return admin;
}

/**
 * A new database t_<pid>_<n>, cloned from simmeter_template (migrated by the global setup), or
 * empty when `empty` is set (cloned from template0: no schema, no drizzle migrations table).
 */
export async function createTestDatabase(opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  seq += 1;
  const name = `t_${process.pid}_${seq}`;
  const template = opts.empty ? "template0" : TEMPLATE_DATABASE;
  await adminPool().query(`create database ${name} template ${template}`);
  return {
    url: withDatabase(inject("pgAdminUrl"), name),
    name,
    drop: async () => {
      // pool.end() resolves before its connections have gone: a forced drop now would send
      // them "terminating connection due to administrator command", which a client that is
      // ending no longer has a listener for (an uncaught error). Wait for them first (2 s).
      for (let i = 0; i < 100; i++) {
        const left = await adminPool().query<{ n: string }>(
          "select count(*) as n from pg_stat_activity where datname = $1",
          [name],
        );
        if (Number(left.rows[0]?.n) === 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await adminPool().query(`drop database if exists ${name} with (force)`);
    },
  };
}

/**
 * A new migrated database and a pool on it (the product's createPool, role "test"): the pool is
 * ended, then the database dropped, by the `cleanup` list the caller runs (reversed) in afterAll.
 */
export async function testPgPool(
  cleanup: (() => Promise<void>)[],
  max = 4,
): Promise<{ pool: pg.Pool; url: string }> {
  const db = await createTestDatabase();
  cleanup.push(db.drop);
  const pool = createPool(db.url, { role: "test", max });
  cleanup.push(() => pool.end());
  return { pool, url: db.url };
}
