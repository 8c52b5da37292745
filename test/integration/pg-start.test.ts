// `simmeter start` and `replay` with DATABASE_URL: the worker thread opens the PostgreSQL ledger
// (migrated at start-up), /readyz includes PostgreSQL, /api and /console read the same ledger,
// and the read commands refuse an unmigrated database rather than migrate it.
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
  it("start migrates an empty database, counts a delivery in its worker thread, reports PostgreSQL in /readyz; /api and /console read the same ledger", async () => {
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
      // The operator API reads the same PostgreSQL ledger (no ADMIN_TOKEN: loopback only).
      const api = await fetch(`${app.adminUrl}/api/usage?granularity=total`);
      expect(api.status).toBe(200);
      expect(await api.json()).toMatchObject({
        object: "list",
        data: [{ sim_sid: `HS${"6".repeat(32)}`, period: "total", bytes: 3000 }],
      });
      const overview = await fetch(`${app.adminUrl}/api/overview`);
      expect(overview.status).toBe(200);
      expect(await overview.json()).toMatchObject({
        object: "overview",
        unbilled: { unmapped_bytes: 3000, unmapped_sims: 1 },
      });
      const page = await fetch(`${app.adminUrl}/console/sims/HS${"6".repeat(32)}`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("3000");
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

  it("the read commands open the PostgreSQL ledger read-only: an unmigrated one is refused, never migrated", async () => {
    const { url, reader } = await emptyDatabase();
    for (const args of [["usage", "--json"], ["quarantine"], ["anomalies"], ["events"]]) {
      const r = await runCli(args, {
        DATABASE_URL: url,
        DATABASE_PATH: undefined,
        REDIS_URL: inject("redisUrl"),
      });
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr).toMatch(/lacks migrations .*start simmeter work \(or start\) once/);
      expect(r.stderr).not.toMatch(/SQLite/);
    }
    expect(
      await reader.scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'",
      ),
    ).toBe(0);
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
