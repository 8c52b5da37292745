import { describe, expect, it } from "vitest";
import { freePort, type RedisHandle, startRedis } from "../../scripts/lib/redis-server.ts";
import { openTestLedger, type TestLedger, type TestLedgerEnv } from "../helpers/ledger.ts";
import { runCli, startSimmeter, waitFor } from "../helpers/process.ts";
import { emulatorWithMeter, stripeEnv } from "../helpers/stripe.ts";

// Real simmeter processes on a ledger of the vitest project (a SQLite file or a PostgreSQL
// database, its `env` given to the process).

const TWILIO_TOKEN = "a-twilio-auth-token-that-must-never-be-logged";
const ADMIN_TOKEN = "an-admin-token-that-must-never-be-logged";
const DB_PASSWORD = "a-database-password-that-must-never-be-logged";

/**
 * The ledger's env, a PostgreSQL URL given a password (the test cluster trusts every local
 * connection and never asks for it): a secret of DATABASE_URL the logs must not show either.
 */
function ledgerEnv(t: TestLedger): TestLedgerEnv {
  if (!t.env.DATABASE_URL) return t.env;
  const url = new URL(t.env.DATABASE_URL);
  url.password = DB_PASSWORD;
  return { ...t.env, DATABASE_URL: url.toString() };
}

/** stderr lines that are not a JSON object (the whole output must be structured logs) */
function notJson(output: string): string[] {
  return output
    .split("\n")
    .filter((l) => l.trim() !== "")
    .filter((l) => {
      try {
        const v = JSON.parse(l);
        return v === null || typeof v !== "object";
      } catch {
        return true;
      }
    });
}

describe("logs are JSON on every path", () => {
  const emu = emulatorWithMeter();

  for (const role of ["start", "serve", "work"] as const) {
    it(`simmeter ${role} keeps writing JSON lines while Redis is down and after it returns`, async () => {
      const t = await openTestLedger({ file: true });
      const redis: RedisHandle = await startRedis();
      const app = await startSimmeter(role, {
        REDIS_URL: redis.url,
        ...ledgerEnv(t),
        LOG_LEVEL: "info",
        PUBLIC_URL: "https://billing.example.com/webhooks/event-streams",
        TWILIO_AUTH_TOKEN: TWILIO_TOKEN,
        ADMIN_TOKEN,
        ...stripeEnv(emu()),
        REPORT_INTERVAL_SECONDS: "1",
      });
      try {
        await redis.kill();
        // Long enough for reconnect attempts of every connection and a scheduled report tick.
        await new Promise((r) => setTimeout(r, 4000));
        const auth = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };
        expect((await fetch(`${app.adminUrl}/readyz`, auth)).status).toBe(503);
        if (role !== "work") {
          // A delivery while Redis is down: 503 so the sender retries (logged as JSON too).
          const r = await fetch(`${app.url}/webhooks/event-streams`, {
            method: "POST",
            body: "[]",
          });
          expect([401, 403]).toContain(r.status);
        }
        await redis.start();
        await waitFor(
          async () => (await fetch(`${app.adminUrl}/readyz`, auth)).ok,
          "ready again",
          20_000,
        );
      } finally {
        await app.stop();
        await redis.stop();
      }
      const out = app.output();
      expect(notJson(out)).toEqual([]);
      const lines = out
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      // One boot line with the version and the effective config, secrets redacted.
      const boot = lines.filter((l) => l.msg === "simmeter starting");
      expect(boot).toHaveLength(1);
      expect(boot[0]).toMatchObject({ version: expect.stringMatching(/^\d+\.\d+\.\d+/), role });
      expect(boot[0]?.config).toMatchObject({ REPORT_INTERVAL_SECONDS: 1 });
      expect(out).not.toContain(TWILIO_TOKEN);
      expect(out).not.toContain(ADMIN_TOKEN);
      expect(out).not.toContain(emu().apiKey);
      expect(out).not.toContain(DB_PASSWORD);
      // The outage is in the log, but not one line per reconnect attempt.
      expect(lines.some((l) => /redis connection error/.test(String(l.msg)))).toBe(true);
      expect(
        lines.filter((l) => /error$/.test(String(l.msg)) && l.level === 40).length,
      ).toBeLessThan(20);
    });
  }

  it("warns loudly at start with ALLOW_UNSIGNED, and refuses it next to a live Stripe key", async () => {
    const t = await openTestLedger({ file: true });
    const redis = await startRedis();
    try {
      const app = await startSimmeter("serve", {
        REDIS_URL: redis.url,
        ...ledgerEnv(t),
        ALLOW_UNSIGNED: "true",
        LOG_LEVEL: "info",
      });
      await app.stop();
      const warn = app
        .output()
        .split("\n")
        .filter((l) => l.includes("ALLOW_UNSIGNED"))
        .map((l) => JSON.parse(l) as { level: number; msg: string })
        .filter((l) => l.level >= 40);
      expect(warn[0]?.msg).toMatch(/UNSIGNED deliveries from anyone/);
      const live = await runCli(["serve"], {
        REDIS_URL: redis.url,
        ...ledgerEnv(t),
        ALLOW_UNSIGNED: "true",
        STRIPE_SECRET_KEY: "sk_live_notarealkey",
        PORT: String(await freePort()),
        ADMIN_PORT: String(await freePort()),
      });
      expect(live.status).toBe(2);
      expect(live.stderr).toMatch(/ALLOW_UNSIGNED=true with a live Stripe key/);
    } finally {
      await redis.stop();
    }
  });
});
