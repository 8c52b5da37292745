import { randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import { runCli, startSimmeter, tempDir, waitFor } from "../helpers/process.ts";

// The webhook (`simmeter start`) and `simmeter replay` as real child processes, each on its own
// ledger of the vitest project (a SQLite file or a PostgreSQL database, its `env` given to the
// process), read with `sql` and `usage`.

const fixtures = new URL("../fixtures/", import.meta.url);
const CAPTURED_SIM = "HS2f71995b834d803ff5376799ba59bd1d";
const HOUR = "2022-12-14T13:00:00.000Z";

/** The ended fixture as compact JSON text. */
const endedText = () =>
  JSON.stringify(
    JSON.parse(readFileSync(new URL("constructed-data-session-ended.json", fixtures), "utf8"))[0],
  );

/**
 * A second ended event, of its own session, whose cumulative total is the JSON number 1e400 (read
 * as Infinity, re-serialised as null): if it were billed at all, its data_total of 999 would be.
 */
const hugeText = () =>
  endedText()
    .replaceAll("EZe7d61405c00f984884d2006f117ad10b", "EZ00000000000000000000000000001e40")
    .replace("PIc64fc7780f12ab694aad316d7b06f7a3", "PI00000000000000000000000000001e40")
    .replace('"data_total":1536', '"data_total":999')
    .replace('"data_session_data_total":1536', '"data_session_data_total":1e400');

const env = (t: TestLedger) => ({
  REDIS_URL: inject("redisUrl"),
  REDIS_PREFIX: `rs${randomUUID().slice(0, 8)}`,
  ...t.env,
  RETENTION_DAYS: "100000", // the fixtures are from 2022
  LOG_LEVEL: "warn",
});

type Quarantined = { event_sid: string; reason: string };
const quarantined = (t: TestLedger) =>
  t.sql<Quarantined>("select event_sid, reason from quarantine order by event_sid");

/** `simmeter replay FILE` with its own worker, ledger and queue; its summary and ledger. */
async function replay(fileName: string, content: string) {
  const t = await openTestLedger({ file: true });
  const file = join(tempDir(), fileName);
  writeFileSync(file, content);
  const r = await runCli(["replay", file], env(t), 120_000);
  expect(r.status, r.stderr).toBe(0);
  return {
    summary: JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}"),
    t,
  };
}

describe("simmeter replay validates events exactly as the webhook does", () => {
  it("an event whose data_session_data_total is 1e400 is quarantined with the same schema reason by the webhook, a replayed JSON array and a replayed JSON-lines file, and only the valid event beside it is billed", async () => {
    const good = endedText();
    const huge = hugeText();
    const expectedRows = [
      {
        event_sid: "EZ00000000000000000000000000001e40",
        reason: expect.stringMatching(/^schema: data\.data_session_data_total: /),
      },
    ];

    // The webhook: the real receiver and worker.
    const t = await openTestLedger({ file: true });
    const app = await startSimmeter("start", { ...env(t), ALLOW_UNSIGNED: "true" });
    let webhookRows: Quarantined[];
    try {
      const res = await fetch(`${app.url}/webhooks/event-streams`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: `[${huge},${good}]`,
      });
      expect(res.status).toBe(200);
      await waitFor(
        async () =>
          (await quarantined(t)).length === 1 &&
          (await t.sql("select 1 from seen_events")).length === 1,
        "webhook delivery processed",
      );
      webhookRows = await quarantined(t);
      expect(webhookRows).toEqual(expectedRows);
      expect(await t.usage()).toEqual({ [`${CAPTURED_SIM}@${HOUR}`]: 1536 });
    } finally {
      await app.stop();
    }

    const array = await replay("events.json", `[\n  ${huge},\n  ${good}\n]\n`);
    const lines = await replay("events.jsonl", `${huge}\n${good}\n`);
    for (const r of [array, lines]) {
      expect(r.summary).toMatchObject({ events: 2, counted: 1, duplicates: 0, quarantined: 1 });
      expect(await quarantined(r.t)).toEqual(webhookRows);
      expect(await r.t.usage()).toEqual({ [`${CAPTURED_SIM}@${HOUR}`]: 1536 });
    }
  }, 180_000);

  it("a replayed JSON array or JSON-lines file that starts with a UTF-8 byte order mark is replayed and billed", async () => {
    const BOM = "\uFEFF";
    const good = endedText();
    const array = await replay("bom.json", `${BOM}[${good}]`);
    const lines = await replay("bom.jsonl", `${BOM}${good}\n`);
    for (const r of [array, lines]) {
      expect(r.summary).toMatchObject({ events: 1, counted: 1, quarantined: 0 });
      expect(await r.t.usage()).toEqual({ [`${CAPTURED_SIM}@${HOUR}`]: 1536 });
    }
  }, 120_000);
});
