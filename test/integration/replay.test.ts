import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { fleet, truthOf } from "../helpers/fleet.ts";
import { tempDir, usageOf } from "../helpers/process.ts";

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");

describe("simmeter replay", () => {
  it("replays a generated 100,000-event JSON-lines file through the queue and worker; usage equals the ground truth", () => {
    const dir = tempDir();
    let events: unknown[] = [];
    for (let seed = 1; events.length < 100_000; seed++)
      events = events.concat(fleet(1000, seed).events);
    events = events.slice(0, 100_000);
    // Computed from the events actually in the file (the cut may drop a session's last readings).
    const expected = truthOf(events);
    const file = join(dir, "events.jsonl");
    writeFileSync(file, `${events.map((e) => JSON.stringify(e)).join("\n")}\n`);
    const dbPath = join(dir, "replay.db");
    const r = spawnSync(process.execPath, [BIN, "replay", file], {
      env: {
        ...process.env,
        REDIS_URL: inject("redisUrl"),
        REDIS_PREFIX: `r${randomUUID().slice(0, 8)}`,
        DATABASE_PATH: dbPath,
        RETENTION_DAYS: "100000",
        LOG_LEVEL: "warn",
      },
      encoding: "utf8",
      timeout: 240_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}");
    expect(summary).toMatchObject({
      events: 100_000,
      counted: 100_000,
      duplicates: 0,
      quarantined: 0,
    });
    expect(usageOf(dbPath)).toEqual(expected);
    console.log(`replay: ${JSON.stringify(summary)}`);
  }, 300_000);
});
