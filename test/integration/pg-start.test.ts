// `simmeter start` and `replay` with DATABASE_URL: the worker thread opens the PostgreSQL ledger
// (migrated at start-up), /readyz includes PostgreSQL, the parts that still read SQLite only say
// so instead of reading the wrong ledger.
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createTestDatabase } from "../helpers/pg.ts";
import { pgLedgerReader } from "../helpers/pg-ledger.ts";
import { runCli, startSimmeter, tempDir, waitFor } from "../helpers/process.ts";
import { recentSession } from "../helpers/seed.ts";

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function emptyDatabase() {
  const db = await createTestDatabase({ empty: true });
  cleanup.push(db.drop);
  const reader = pgLedgerReader(db.url);
  cleanup.push(reader.close);
  return { url: db.url, reader };
}

describe("simmeter on a PostgreSQL ledger", () => {
  it("start migrates an empty database, counts a delivery in its worker thread, reports PostgreSQL in /readyz; /api says what it cannot read", async () => {
    const { url, reader } = await emptyDatabase();
    const app = await startSimmeter("start", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `pgstart${randomUUID().slice(0, 8)}`,
      DATABASE_URL: url,
      ALLOW_UNSIGNED: "true",
      LOG_LEVEL: "info",
    });
    try {
      const events = recentSession(`HS${"6".repeat(32)}`, 3);
      const res = await fetch(`${app.url}/webhooks/event-streams`, {
        method: "POST",
        body: JSON.stringify(events),
      });
      expect(res.status).toBe(200);
      await waitFor(
        async () => (await reader.scalar("select count(*) from seen_events")) === 3,
        "the delivery's 3 events counted in PostgreSQL",
        30_000,
        100,
      );
      expect(await reader.scalar("select sum(bytes) from usage_hourly")).toBe(3000);
      const ready = await fetch(`${app.adminUrl}/readyz`);
      expect(ready.status).toBe(200);
      expect(((await ready.json()) as { checks: Record<string, string> }).checks.database).toBe(
        "ok",
      );
      const api = await fetch(`${app.adminUrl}/api/usage`);
      expect(api.status).toBe(501);
      expect(await api.json()).toMatchObject({
        error: { code: "not_implemented", message: expect.stringMatching(/SQLite ledger only/) },
      });
      // The logged configuration never carries the URL's password (the cluster trusts any).
      expect(app.output()).toContain('"DATABASE_URL":"postgres');
    } finally {
      expect(await app.stop()).toBe(0);
    }
  });

  it("replay with no worker running counts a file into PostgreSQL in its own worker", async () => {
    const { url, reader } = await emptyDatabase();
    const file = join(tempDir(), "events.jsonl");
    const events = recentSession(`HS${"7".repeat(32)}`, 4);
    writeFileSync(file, `${events.map((e) => JSON.stringify(e)).join("\n")}\n`);
    const r = await runCli(["replay", file], {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `pgreplay${randomUUID().slice(0, 8)}`,
      DATABASE_URL: url,
      DATABASE_PATH: undefined,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(await reader.scalar("select count(*) from seen_events")).toBe(4);
    expect(await reader.scalar("select sum(bytes) from usage_hourly")).toBe(4000);
  });

  it("a command that reads SQLite only refuses DATABASE_URL (exit 2) rather than read DATABASE_PATH's default file", async () => {
    const { url } = await emptyDatabase();
    const r = await runCli(["usage", "--json"], {
      DATABASE_URL: url,
      DATABASE_PATH: undefined,
      REDIS_URL: inject("redisUrl"),
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/reads the SQLite ledger only so far/);
    expect(r.stderr).toMatch(/unset DATABASE_URL/);
  });

  it("refuses DATABASE_URL together with DATABASE_PATH, before opening either", async () => {
    const r = await runCli(["work"], {
      DATABASE_URL: "postgres://simmeter:secret-pw@127.0.0.1:1/none",
      DATABASE_PATH: join(tempDir(), "x.db"),
      REDIS_URL: inject("redisUrl"),
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/DATABASE_URL and DATABASE_PATH are both set/);
    expect(r.stderr).not.toContain("secret-pw");
  });
});
