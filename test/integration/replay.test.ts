import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { fleet, truthOf } from "../helpers/fleet.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { runCli, tempDir } from "../helpers/process.ts";

// `simmeter replay` as a real child process, on the ledger of the vitest project (a SQLite file
// or a PostgreSQL database, its `env` given to the process), read with `usage`.

describe("simmeter replay", () => {
  it("replays a generated 100,000-event JSON-lines file through the queue and worker; usage equals the ground truth", async () => {
    const t = await openTestLedger({ file: true });
    const dir = tempDir();
    let events: unknown[] = [];
    for (let seed = 1; events.length < 100_000; seed++)
      events = events.concat(fleet(1000, seed).events);
    events = events.slice(0, 100_000);
    // Computed from the events actually in the file (the cut may drop a session's last readings).
    const expected = truthOf(events);
    const file = join(dir, "events.jsonl");
    writeFileSync(file, `${events.map((e) => JSON.stringify(e)).join("\n")}\n`);
    const r = await runCli(
      ["replay", file],
      {
        REDIS_URL: inject("redisUrl"),
        REDIS_PREFIX: `r${randomUUID().slice(0, 8)}`,
        ...t.env,
        RETENTION_DAYS: "100000",
        LOG_LEVEL: "warn",
      },
      240_000,
    );
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}");
    expect(summary).toMatchObject({
      events: 100_000,
      counted: 100_000,
      duplicates: 0,
      quarantined: 0,
    });
    expect(await t.usage()).toEqual(expected);
    console.log(`replay: ${JSON.stringify(summary)}`);
  }, 300_000);
});
