import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { signKore } from "../../src/receive/kore-signature.ts";
import { signTwilio } from "../../src/receive/twilio-signature.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import { type SimmeterProcess, startSimmeter, waitFor } from "../helpers/process.ts";

// The webhook receiver as a real `simmeter start` process, on the ledger of the vitest project
// (a SQLite file or a PostgreSQL database, its `env` given to the process), read with `sql`.

const fixtures = new URL("../fixtures/", import.meta.url);
const raw = (name: string) => readFileSync(new URL(name, fixtures));
const vectors = JSON.parse(raw("signature-vectors.json").toString("utf8"));
const testEventVector = vectors.twilio.vectors.find(
  (v: { id: string }) => v.id === "event-streams-test-event",
);

const TOKEN = "11111111111111111111111111111111";
const PUBLIC_URL = "https://96e5-165-225-114-134.ngrok-free.app/webhook";
const KORE_SECRET = "12345";
const PATH = "/webhooks/event-streams";
const CAPTURED_SIM = "HS2f71995b834d803ff5376799ba59bd1d";

describe("the webhook receiver through real HTTP, Redis and the ledger", () => {
  let app: SimmeterProcess;
  let t: TestLedger;

  beforeAll(async () => {
    t = await openTestLedger({ file: true, autoClose: false });
    app = await startSimmeter("start", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `t${randomUUID().slice(0, 8)}`,
      ...t.env,
      PUBLIC_URL,
      TWILIO_AUTH_TOKEN: `rotated-old-token,${TOKEN}`,
      KORE_WEBHOOK_SECRET: KORE_SECRET,
      RETENTION_DAYS: "100000", // the fixtures are from 2022
    });
  });
  afterAll(async () => {
    await app?.stop();
    await t?.close();
  });

  const postTwilio = (body: Buffer | string, token = TOKEN) => {
    const signed = signTwilio(token, PUBLIC_URL, body);
    const query = signed.url.slice(signed.url.indexOf("?"));
    return fetch(`${app.url}${PATH}${query}`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-twilio-signature": signed.signature },
      body: typeof body === "string" ? body : new Uint8Array(body),
    });
  };
  const postKore = (body: Buffer | string) =>
    fetch(`${app.url}${PATH}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "kore-signature": signKore(KORE_SECRET, "POST", PUBLIC_URL, body),
      },
      body: typeof body === "string" ? body : new Uint8Array(body),
    });
  const counted = async (sid: string) =>
    (
      await t.sql<{ n: number }>("select count(*) as n from seen_events where event_sid = ?", sid)
    )[0]?.n ?? 0;
  const waitCounted = (sid: string) =>
    waitFor(async () => (await counted(sid)) === 1, `${sid} counted`);

  it("the published Event Streams test event verifies with its test vector and is acknowledged, not billed", async () => {
    const body = raw("twilio-test-event.json");
    const res = await fetch(`${app.url}${PATH}?bodySHA256=${testEventVector.bodySha256}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-twilio-signature": testEventVector.signature,
      },
      body,
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      test: true,
      testIds: ["cae2f9e2-c277-4612-8ad3-93c1a7a3ef88"],
    });
  });

  it("the published test event with a trailing newline is refused (body hash mismatch)", async () => {
    const res = await fetch(`${app.url}${PATH}?bodySHA256=${testEventVector.bodySha256}`, {
      method: "POST",
      headers: { "x-twilio-signature": testEventVector.signature },
      body: Buffer.concat([raw("twilio-test-event.json"), Buffer.from("\n")]),
    });
    expect(res.status).toBe(403);
  });

  it("fixtures signed by Twilio (current and rotated token) and by KORE are accepted and counted", async () => {
    const updated = raw("twilio-data-session-updated.json");
    expect((await postTwilio(updated)).status).toBe(200);
    const ended = raw("constructed-data-session-ended.json");
    expect((await postTwilio(ended, "rotated-old-token")).status).toBe(200);
    // KORE: same data object, KORE envelope.
    const accepted = JSON.parse(raw("constructed-attachment-accepted.json").toString("utf8"));
    accepted[0].type = accepted[0].type.replace("com.twilio.iot", "com.kore.iot");
    accepted[0].data.event_type = accepted[0].type;
    accepted[0].source = "kore-events";
    expect((await postKore(JSON.stringify(accepted))).status).toBe(200);
    await waitCounted("EZeb42ec296e094786c6dd34aab7b15fac");
    await waitCounted("EZe7d61405c00f984884d2006f117ad10b");
    await waitCounted(accepted[0].data.event_sid);
    expect(await t.usage()).toEqual({ [`${CAPTURED_SIM}@2022-12-14T13:00:00.000Z`]: 1536 });
  });

  it("a tampered body, a wrong signature or no signature is refused and stores nothing", async () => {
    const body = JSON.parse(raw("constructed-data-session-started.json").toString("utf8"));
    const sid = body[0].data.event_sid;
    const good = JSON.stringify(body);
    const signed = signTwilio(TOKEN, PUBLIC_URL, good);
    const query = signed.url.slice(signed.url.indexOf("?"));
    const tampered = good.replace('"apn":"super"', '"apn":"evil"');
    const cases = [
      { headers: { "x-twilio-signature": signed.signature }, body: tampered, status: 403 },
      {
        headers: { "x-twilio-signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" },
        body: good,
        status: 403,
      },
      { headers: { "kore-signature": "0".repeat(64) }, body: good, status: 403 },
      { headers: { "kore-signature": "" }, body: good, status: 403 },
      { headers: {}, body: good, status: 401 },
    ];
    for (const c of cases) {
      const res = await fetch(`${app.url}${PATH}${query}`, {
        method: "POST",
        headers: c.headers as Record<string, string>,
        body: c.body,
      });
      expect(res.status, JSON.stringify(c.headers)).toBe(c.status);
    }
    // A valid delivery afterwards proves the queue was flowing while the bad ones were refused.
    expect((await postKore(good)).status).toBe(200);
    await waitCounted(sid);
    const q = (
      await t.sql<{ n: number }>("select count(*) as n from quarantine where raw like '%evil%'")
    )[0]?.n;
    expect(q).toBe(0);
  });

  it("a delivery with one malformed and one valid event answers 2xx, counts the valid one and quarantines the other", async () => {
    const good = JSON.parse(raw("constructed-data-session-failed.json").toString("utf8"))[0];
    const bad = structuredClone(good);
    bad.data.event_sid = "EZ0000000000000000000000000000bad1";
    bad.data.sim_sid = "not-a-sim";
    const res = await postTwilio(JSON.stringify([bad, good]));
    expect(res.status).toBe(200);
    await waitCounted(good.data.event_sid);
    const q = await waitFor(
      async () =>
        (
          await t.sql<{ reason: string; raw: string }>(
            "select reason, raw from quarantine where event_sid = ?",
            bad.data.event_sid,
          )
        )[0],
      "quarantine row",
    );
    expect(q.reason).toMatch(/sim_sid/);
    expect(JSON.parse(q.raw).data.sim_sid).toBe("not-a-sim");
    expect(await counted(bad.data.event_sid)).toBe(0);
  });

  it("the same delivery sent 3 times is counted once", async () => {
    const ev = JSON.parse(raw("constructed-data-session-ended.json").toString("utf8"))[0];
    ev.id = ev.data.event_sid = "EZ1111111111111111111111111111abcd";
    ev.data.data_session_sid = "PI1111111111111111111111111111abcd";
    const body = JSON.stringify([ev]);
    for (let i = 0; i < 3; i++) expect((await postTwilio(body)).status).toBe(200);
    await waitCounted(ev.data.event_sid);
    await waitFor(async () => {
      const m = await (await fetch(`${app.adminUrl}/metrics`)).text();
      return /simmeter_ingested_events_total\{outcome="duplicate",kind="any"\} ([2-9]|\d\d)/.test(
        m,
      );
    }, "duplicates processed");
    const sessions = await t.sql<{ total_bytes: number }>(
      "select total_bytes from sessions where session_sid = ?",
      ev.data.data_session_sid,
    );
    expect(sessions).toEqual([{ total_bytes: 1536 }]);
    expect((await t.usage())[`${CAPTURED_SIM}@2022-12-14T13:00:00.000Z`]).toBe(1536 * 2);
  });

  it("an authenticated body that is not JSON is acknowledged and quarantined verbatim", async () => {
    const res = await postTwilio("{not json");
    expect(res.status).toBe(200);
    await waitFor(
      async () => (await t.sql("select 1 from quarantine where raw = '{not json'")).length === 1,
      "raw body quarantined",
    );
  });

  it("serves health, readiness, Prometheus metrics and the usage API on the admin listener, and none of them on the webhook listener", async () => {
    expect((await fetch(`${app.adminUrl}/healthz`)).status).toBe(200);
    const ready = await fetch(`${app.adminUrl}/readyz`);
    expect(await ready.json()).toEqual({ ok: true, checks: { redis: "ok", database: "ok" } });
    const metrics = await (await fetch(`${app.adminUrl}/metrics`)).text();
    for (const name of [
      "simmeter_deliveries_total",
      "simmeter_received_events_total",
      "simmeter_quarantined_events_total",
      "simmeter_queue_depth",
      "simmeter_ingest_lag_seconds_bucket",
    ]) {
      expect(metrics).toContain(name);
    }
    const res = await fetch(`${app.adminUrl}/api/usage?sim=${CAPTURED_SIM}&granularity=day`);
    const usage = (await res.json()) as {
      object: string;
      data: { sim_sid: string; period: string }[];
    };
    expect(usage.object).toBe("list");
    expect(usage.data[0]).toMatchObject({ sim_sid: CAPTURED_SIM, period: "2022-12-14" });
    const bad = await fetch(`${app.adminUrl}/api/usage?granularity=week`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("granularity");
    for (const path of ["/healthz", "/readyz", "/metrics", "/api/usage", "/api/openapi.json"]) {
      const r = await fetch(`${app.url}${path}`);
      expect(r.status, path).toBe(404);
      expect(r.headers.get("content-type"), path).toMatch(/application\/json/);
    }
  });
});
