import pg from "pg";
import type { TestProject } from "vitest/node";
import { startPostgres, withDatabase } from "../../scripts/lib/postgres-server.ts";
import { migratePg } from "../../src/db/pg/client.ts";

export const TEMPLATE_DATABASE = "simmeter_template";

// One private PostgreSQL cluster for the whole run (scripts/lib/postgres-server.ts: a free port,
// a temp data dir, fsync off), stopped at the end. simmeter_template holds the migrated schema,
// applied by the product's own migratePg; tests clone it per ledger (test/helpers/pg.ts
// createTestDatabase). A template must have no sessions while it is cloned, so nothing here stays
// connected to it.
export default async function setup(project: TestProject) {
  const server = await startPostgres();
  try {
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      await admin.query(`create database ${TEMPLATE_DATABASE}`);
    } finally {
      await admin.end();
    }
    await migratePg(withDatabase(server.url, TEMPLATE_DATABASE));
  } catch (err) {
    await server.stop();
    throw err;
  }
  project.provide("pgAdminUrl", server.url);
  return async () => {
    await server.stop();
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    /** the private cluster's postgres database, as superuser postgres (no password) */
    pgAdminUrl: string;
  }
}
