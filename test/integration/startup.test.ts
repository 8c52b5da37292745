import { describe, expect, it } from "vitest";
import { startRedis } from "../../scripts/lib/redis-server.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { runCli, startSimmeter, waitFor } from "../helpers/process.ts";

// Real simmeter processes configured for the ledger of the vitest project (a SQLite file or a
// PostgreSQL database, its `env` given to the process): the refusals come before the ledger is
// opened, with either backend's configuration beside the bad value.

/** stderr must be JSON log lines only; the last is the fatal refusal. */
function fatalLine(stderr: string): { level: number; msg: string; err: string } {
  const lines = stderr
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { level: number; msg: string; err: string });
  const last = lines[lines.length - 1];
  expect(last?.level).toBe(60);
  expect(last?.msg).toBe("invalid configuration");
  return last as { level: number; msg: string; err: string };
}

describe("starting the service", () => {
  it("refuses to start a receiver with no secret and no ALLOW_UNSIGNED, naming the variables", async () => {
    const t = await openTestLedger({ file: true });
    const r = await runCli(["serve"], {
      ...t.env,
      TWILIO_AUTH_TOKEN: "",
      KORE_WEBHOOK_SECRET: "",
      ALLOW_UNSIGNED: "",
    });
    expect(r.status).toBe(2);
    // A service role's stderr is its log: the refusal is one JSON line too.
    const line = fatalLine(r.stderr);
    expect(line.err).toMatch(/TWILIO_AUTH_TOKEN/);
    expect(line.err).toMatch(/KORE_WEBHOOK_SECRET/);
  });

  it("refuses a bad value with a message naming the variable", async () => {
    const t = await openTestLedger({ file: true });
    const r = await runCli(["start"], {
      ...t.env,
      ALLOW_UNSIGNED: "true",
      BILLING_MODE: "hourly",
    });
    expect(r.status).toBe(2);
    expect(fatalLine(r.stderr).err).toMatch(/BILLING_MODE="hourly"/);
  });
});

describe("checks at start-up", () => {
  it("warns when Redis may evict keys (BullMQ loses jobs unless maxmemory-policy is noeviction)", async () => {
    const t = await openTestLedger({ file: true });
    const redis = await startRedis({ evictionPolicy: "allkeys-lru" });
    const worker = await startSimmeter("work", { REDIS_URL: redis.url, ...t.env });
    try {
      await waitFor(
        () => worker.output().includes("maxmemory-policy is allkeys-lru"),
        "eviction warning",
        10_000,
      );
    } finally {
      await worker.stop();
      await redis.stop();
    }
  });
});
