import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { attributeSession, type Reading } from "../../src/accounting/attribute.ts";
import { type ConnectionEvent, classifyCloudEvent } from "../../src/events/schema.ts";
import { verifyKoreSignature } from "../../src/receive/kore-signature.ts";
import { twilioSignedUrl, verifyTwilioSignature } from "../../src/receive/twilio-signature.ts";
import {
  type FleetOptions,
  type GroundTruth,
  generateFleet,
  simulateFleet,
} from "../../src/simulate/fleet.ts";
import {
  sendDeliveries,
  type TruthJson,
  truthFromJson,
  writeCustomersCsv,
  writeEventsJsonl,
  writeTruthJson,
} from "../../src/simulate/output.ts";

const FROM = Date.UTC(2026, 0, 5, 0, 0, 0);
const H = 3_600_000;
const base: FleetOptions = { seed: 1, customers: 5, sims: 40, from: FROM, to: FROM + 30 * H };

function run(o: FleetOptions): { events: Record<string, unknown>[]; truth: GroundTruth } {
  const sim = simulateFleet(o);
  const events = [...sim.events];
  return { events, truth: sim.truth() };
}

function parsed(events: readonly unknown[]): ConnectionEvent[] {
  return events.map((e) => {
    const c = classifyCloudEvent(e);
    if (c.kind !== "event") throw new Error(`not a valid event: ${JSON.stringify(c)}`);
    return c.event;
  });
}

function streamHash(o: FleetOptions): string {
  const h = createHash("sha256");
  for (const e of generateFleet(o)) h.update(`${JSON.stringify(e)}\n`);
  return h.digest("hex");
}

/** billed readings per session, through the production accounting, summed per SIM and hour */
function viaAttributeSession(events: readonly ConnectionEvent[], mode: "realtime" | "ended-only") {
  const sessions = new Map<string, { sim: string; start: number | null; readings: Reading[] }>();
  for (const e of events) {
    const billed =
      e.kind === "data-session.ended" || (e.kind === "data-session.updated" && mode === "realtime");
    if (!billed || !e.sessionSid || e.readingMs === null) continue;
    let s = sessions.get(e.sessionSid);
    if (!s) {
      s = { sim: e.simSid, start: e.sessionStartMs, readings: [] };
      sessions.set(e.sessionSid, s);
    }
    s.readings.push({
      eventSid: e.eventSid,
      t: e.readingMs,
      cumulative: e.cumulativeTotal,
      window: e.windowTotal,
      windowStart: e.windowStartMs,
      ended: e.kind === "data-session.ended",
    });
  }
  const perSim = new Map<string, Map<number, number>>();
  for (const s of sessions.values()) {
    const a = attributeSession(s.readings, {
      attribution: "end",
      sessionStart: s.start,
      maxBytesPerSecond: 250_000_000,
    });
    expect(a.anomalies).toEqual([]);
    const m = perSim.get(s.sim) ?? new Map<number, number>();
    for (const [b, v] of a.buckets) m.set(b, (m.get(b) ?? 0) + v);
    perSim.set(s.sim, m);
  }
  return perSim;
}

const nonEmpty = (m: Map<string, Map<number, number>>) =>
  new Map(
    [...m]
      .filter(([, hours]) => hours.size > 0)
      .map(([k, hours]) => [k, new Map([...hours].sort((a, b) => a[0] - b[0]))]),
  );
const sumHours = (m: Map<string, Map<number, number>>) =>
  [...m.values()].reduce((s, hours) => s + [...hours.values()].reduce((a, b) => a + b, 0), 0);

describe("fleet simulator", () => {
  it("is deterministic: the same seed gives the same stream, another seed a different one", () => {
    const o: FleetOptions = {
      ...base,
      perturb: { duplicateRate: 0.05, lostUpdateRate: 0.1, reorder: true },
      noise: { rejectionStormRate: 0.05 },
    };
    const a = streamHash(o);
    expect(streamHash(o)).toBe(a);
    expect(streamHash({ ...o, seed: 2 })).not.toBe(a);
  });

  it("emits only valid Super SIM events with well-formed ids, times inside the window", () => {
    for (const envelope of ["twilio", "kore"] as const) {
      for (const schemaVersion of [1, 2] as const) {
        const { events, truth } = run({
          ...base,
          envelope,
          schemaVersion,
          perturb: { duplicateRate: 0.05, lostUpdateRate: 0.1, reorder: true },
          noise: { rejectionStormRate: 0.05 },
        });
        const evs = parsed(events);
        expect(evs.length).toBe(truth.events);
        // Collected, not asserted per event: thousands of expect calls dominate the runtime.
        const bad: string[] = [];
        const want = (ok: boolean, what: string, e: ConnectionEvent) => {
          if (!ok && bad.length < 5) bad.push(`${what}: ${JSON.stringify(e)}`);
        };
        for (const e of evs) {
          want(/^EZ[0-9a-f]{32}$/.test(e.eventSid), "event_sid", e);
          want(/^HS[0-9a-f]{32}$/.test(e.simSid), "sim_sid", e);
          want(/^AC[0-9a-f]{32}$/.test(e.accountSid), "account_sid", e);
          want(/^[0-9]{19,20}$/.test(e.iccid), "iccid", e);
          want(e.fleetSid === null || /^HF[0-9a-f]{32}$/.test(e.fleetSid), "fleet_sid", e);
          want(e.sessionSid === null || /^PI[0-9a-f]{32}$/.test(e.sessionSid), "session", e);
          want(e.schemaVersion === schemaVersion, "schema", e);
          want(e.timestampMs >= truth.from && e.timestampMs <= truth.to, "time", e);
          const cus = truth.customers[e.simSid];
          want(/^cus_[A-Za-z0-9]{14}$/.test(cus ?? ""), "customer", e);
          want(e.fleetSid === null || truth.fleets[e.fleetSid] === cus, "fleet owner", e);
        }
        expect(bad).toEqual([]);
      }
    }
  });

  it("assigns every SIM to a customer and every customer gets at least one SIM", () => {
    const { truth } = run(base);
    expect(Object.keys(truth.customers)).toHaveLength(base.sims);
    expect(new Set(Object.values(truth.customers)).size).toBe(base.customers);
    expect(truth.simHour.size).toBe(base.sims);
    expect(truth.customerHour.size).toBe(base.customers);
  });

  it("produces realistic sessions: started, ~6-min updates, ended; long ones cross hours and days", () => {
    const { events } = run({ ...base, noise: { rejectionStormRate: 0.05 } });
    const evs = parsed(events);
    const bySession = new Map<string, ConnectionEvent[]>();
    for (const e of evs) {
      if (!e.sessionSid) continue;
      const list = bySession.get(e.sessionSid) ?? [];
      list.push(e);
      bySession.set(e.sessionSid, list);
    }
    let crossesDay = 0;
    let crossesHour = 0;
    for (const list of bySession.values()) {
      const [first, ...rest] = list;
      expect(first?.kind).toBe("data-session.started");
      expect(list.at(-1)?.kind).toBe("data-session.ended");
      const start = first?.sessionStartMs as number;
      const end = list.at(-1)?.readingMs as number;
      if (Math.floor(start / (24 * H)) !== Math.floor(end / (24 * H))) crossesDay++;
      if (Math.floor(start / H) !== Math.floor(end / H)) crossesHour++;
      let prev = start;
      for (const e of rest) {
        // Windows tile the session without gaps or overlaps.
        expect(e.windowStartMs).toBe(prev);
        if (e.kind === "data-session.updated") {
          expect((e.readingMs as number) - prev).toBeGreaterThanOrEqual(350_000);
          expect((e.readingMs as number) - prev).toBeLessThanOrEqual(370_000);
        }
        prev = e.readingMs as number;
      }
    }
    expect(crossesDay).toBeGreaterThan(0);
    expect(crossesHour).toBeGreaterThan(bySession.size / 4);
    // Heavy tail: most windows are small, some reach megabytes.
    const windows = evs.filter((e) => e.windowTotal !== null).map((e) => e.windowTotal as number);
    windows.sort((a, b) => a - b);
    expect(windows[Math.floor(windows.length / 2)]).toBeLessThan(200_000);
    expect(windows.at(-1)).toBeGreaterThan(5_000_000);
    // Storms: dozens of attachment.rejected for one SIM within minutes.
    const rejected = new Map<string, number[]>();
    for (const e of evs) {
      if (e.kind !== "attachment.rejected") continue;
      rejected.set(e.simSid, [...(rejected.get(e.simSid) ?? []), e.timestampMs]);
    }
    const storm = [...rejected.values()].some((ts) =>
      ts.some((t) => ts.filter((u) => u >= t && u <= t + 5 * 60_000).length >= 20),
    );
    expect(storm).toBe(true);
    for (const k of ["attachment.accepted", "data-session.failed"]) {
      expect(evs.some((e) => e.kind === k)).toBe(true);
    }
  });

  it("keeps cumulative totals monotonic per session; the ended total is the sum of windows", () => {
    const { events, truth } = run(base);
    const evs = parsed(events);
    const sessions = new Map<string, { max: number; windows: number; ended: number | null }>();
    for (const e of evs) {
      if (e.kind !== "data-session.updated" && e.kind !== "data-session.ended") continue;
      const s = sessions.get(e.sessionSid as string) ?? { max: 0, windows: 0, ended: null };
      expect(e.cumulativeTotal as number).toBeGreaterThanOrEqual(s.max);
      s.max = e.cumulativeTotal as number;
      s.windows += e.windowTotal as number;
      if (e.kind === "data-session.ended") s.ended = e.cumulativeTotal;
      sessions.set(e.sessionSid as string, s);
    }
    let endedSum = 0;
    for (const s of sessions.values()) {
      expect(s.ended).toBe(s.windows);
      endedSum += s.ended as number;
    }
    expect(sessions.size).toBe(truth.sessions);
    expect(truth.totalBytes).toBe(endedSum);
    expect(truth.carriedBytes).toBe(endedSum);
    expect(sumHours(truth.simHour)).toBe(truth.totalBytes);
    expect(sumHours(truth.customerHour)).toBe(truth.totalBytes);
  });

  it("with losses, duplicates and reordering the v2 truth still equals the sum of ended totals", () => {
    const { events, truth } = run({
      ...base,
      perturb: { duplicateRate: 0.1, lostUpdateRate: 0.2, reorder: true },
    });
    const evs = parsed(events);
    const ended = new Map<string, number>();
    for (const e of evs) {
      if (e.kind === "data-session.ended")
        ended.set(e.sessionSid as string, e.cumulativeTotal as number);
    }
    expect(ended.size).toBe(truth.sessions);
    expect(truth.totalBytes).toBe([...ended.values()].reduce((a, b) => a + b, 0));
    expect(truth.lostUpdates).toBeGreaterThan(0);
    expect(truth.duplicates).toBeGreaterThan(0);
    expect(new Set(evs.map((e) => e.eventSid)).size).toBe(truth.events - truth.duplicates);
    expect(truth.billingEvents).toBe(
      evs.filter((e) => e.kind === "data-session.updated" || e.kind === "data-session.ended")
        .length,
    );
    // Reordered: not in time order, but only locally.
    let inversions = 0;
    let latest = 0;
    for (const e of evs) {
      if (e.timestampMs < latest) inversions++;
      latest = Math.max(latest, e.timestampMs);
    }
    expect(inversions).toBeGreaterThan(0);
  });

  it("without perturbation emits in time order", () => {
    const evs = parsed(run(base).events);
    for (let i = 1; i < evs.length; i++) {
      expect(evs[i]?.timestampMs).toBeGreaterThanOrEqual(evs[i - 1]?.timestampMs as number);
    }
  });

  it("ended-only emits no updated events and over 90% fewer events for the same fleet", () => {
    const o = { ...base, sims: 50, to: FROM + 24 * H };
    const rt = run(o);
    const eo = run({ ...o, billingMode: "ended-only" });
    const kinds = new Set(parsed(eo.events).map((e) => e.kind));
    expect([...kinds]).toEqual(["data-session.ended"]);
    const ratio = eo.truth.events / rt.truth.events;
    expect(ratio).toBeLessThanOrEqual(0.1);
    // Same sessions and bytes; only the subscription differs.
    expect(eo.truth.sessions).toBe(rt.truth.sessions);
    expect(eo.truth.totalBytes).toBe(rt.truth.totalBytes);
  });

  it.each([
    ["realtime", 2],
    ["realtime", 1],
    ["ended-only", 2],
    ["ended-only", 1],
  ] as const)(
    "the truth per SIM and hour equals attributeSession's (%s, schema v%i, perturbed)",
    (mode, schemaVersion) => {
      const { events, truth } = run({
        ...base,
        billingMode: mode,
        schemaVersion,
        perturb: { duplicateRate: 0.1, lostUpdateRate: 0.15, reorder: true },
      });
      const viaAccounting = viaAttributeSession(parsed(events), mode);
      expect(nonEmpty(truth.simHour).size).toBeGreaterThan(base.sims / 2);
      expect(nonEmpty(viaAccounting)).toEqual(nonEmpty(truth.simHour));
      if (schemaVersion === 2) expect(truth.totalBytes).toBe(truth.carriedBytes);
      // v1 has only window deltas: lost or unsubscribed updates lose their bytes.
      else expect(truth.totalBytes).toBeLessThan(truth.carriedBytes);
    },
  );

  it("streams 200,000 events with small heap growth", () => {
    const before = process.memoryUsage().heapUsed;
    let n = 0;
    let bytes = 0;
    for (const e of generateFleet({
      seed: 7,
      customers: 20,
      sims: 300,
      from: FROM,
      to: FROM + 240 * H,
      perturb: { duplicateRate: 0.05, lostUpdateRate: 0.05, reorder: true },
    })) {
      bytes += (e.id as string).length;
      if (++n >= 200_000) break;
    }
    const growth = process.memoryUsage().heapUsed - before;
    expect(n).toBe(200_000);
    expect(bytes).toBe(200_000 * 34);
    expect(growth).toBeLessThan(100 * 1024 * 1024);
  });

  it("refuses a second pass and a truth before the end", () => {
    const sim = simulateFleet(base);
    expect(() => sim.truth()).toThrow(/whole event stream/);
    for (const _ of sim.events) break;
    expect(() => [...sim.events]).toThrow(/only once/);
  });
});

describe("simulator output", () => {
  const dir = mkdtempSync(join(tmpdir(), "simmeter-sim-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes JSON lines, the truth and the customers CSV", async () => {
    const sim = simulateFleet({ ...base, perturb: { duplicateRate: 0.05 } });
    const out = join(dir, "events.jsonl");
    const written = await writeEventsJsonl(out, sim.events);
    const truth = sim.truth();
    await writeTruthJson(join(dir, "truth.json"), truth);
    await writeCustomersCsv(join(dir, "customers.csv"), truth.customers);

    const lines = readFileSync(out, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.length).toBe(truth.events);
    expect(written.events).toBe(truth.events);
    expect(parsed(lines.map((l) => JSON.parse(l))).length).toBe(truth.events);

    const json = JSON.parse(readFileSync(join(dir, "truth.json"), "utf8")) as TruthJson;
    expect(json.totalBytes).toBe(truth.totalBytes);
    expect(json.events).toBe(truth.events);
    expect(json.billingEvents).toBe(truth.billingEvents);
    expect(Object.keys(json.customers)).toHaveLength(base.sims);
    const hourKeys = Object.values(json.customerHour).flatMap((h) => Object.keys(h));
    for (const k of hourKeys) expect(k).toMatch(/^\d{4}-\d\d-\d\dT\d\d:00:00Z$/);
    const back = truthFromJson(json);
    expect(nonEmpty(back.simHour)).toEqual(nonEmpty(truth.simHour));
    expect(back.customerHour).toEqual(truth.customerHour);

    const csv = readFileSync(join(dir, "customers.csv"), "utf8").trim().split("\n");
    expect(csv[0]).toBe("sim_sid,stripe_customer_id");
    expect(csv).toHaveLength(base.sims + 1);
    for (const row of csv.slice(1)) {
      const [sim, cus] = row.split(",");
      expect(truth.customers[sim as string]).toBe(cus);
    }
  });
});

describe("sendDeliveries", () => {
  async function receiver(
    check: (req: IncomingMessage, body: Buffer) => boolean,
    answer: (body: Buffer, attempt: number) => number,
  ) {
    const received = new Map<string, number>();
    const attempts = new Map<string, number>();
    let badSignatures = 0;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        if (!check(req, body)) {
          badSignatures++;
          res.writeHead(403).end();
          return;
        }
        const key = createHash("sha256").update(body).digest("hex");
        const n = (attempts.get(key) ?? 0) + 1;
        attempts.set(key, n);
        const status = answer(body, n);
        if (status < 300) {
          for (const e of JSON.parse(body.toString("utf8")) as { id: string }[]) {
            received.set(e.id, (received.get(e.id) ?? 0) + 1);
          }
        }
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    return {
      url: `http://127.0.0.1:${port}/webhooks/event-streams`,
      received,
      bad: () => badSignatures,
      close: () => new Promise<void>((r) => server.close(() => r())),
    };
  }

  it("signs like Twilio, batches 1..K, retries 5xx and never retries 4xx", async () => {
    const publicUrl = "https://billing.example.com/webhooks/event-streams";
    const token = "twilio-token-0123456789abcdef0123";
    let deliveryNo = 0;
    const rx = await receiver(
      (req, body) =>
        verifyTwilioSignature({
          authTokens: [token],
          signature: req.headers["x-twilio-signature"] as string | undefined,
          url: twilioSignedUrl(publicUrl, req.url ?? ""),
          rawBody: body,
        }).ok,
      (_body, attempt) => {
        deliveryNo++;
        if (deliveryNo % 10 === 3) return 400;
        return attempt === 1 && deliveryNo % 4 === 0 ? 503 : 200;
      },
    );
    try {
      const events = [...generateFleet({ ...base, sims: 5, to: FROM + 3 * H })];
      const r = await sendDeliveries({
        url: rx.url,
        events,
        batchMin: 1,
        batchMax: 5,
        signing: { kind: "twilio", authToken: token, publicUrl },
        concurrency: 4,
        retryBaseMs: 5,
      });
      expect(rx.bad()).toBe(0);
      expect(r.retries).toBeGreaterThan(0);
      expect(r.rejected4xx).toBeGreaterThan(0);
      expect(r.failed).toBe(0);
      expect(r.events + r.rejectedEvents).toBe(events.length);
      expect(rx.received.size).toBe(r.events);
      expect(r.deliveries).toBeGreaterThan(events.length / 5);
      expect(r.deliveries).toBeLessThan(events.length);
      expect(r.latenciesMs.count).toBe(r.deliveries + r.rejected4xx + r.retries);
      expect(r.latenciesMs.p99).toBeGreaterThanOrEqual(r.latenciesMs.p50);
    } finally {
      await rx.close();
    }
  });

  it("signs like KORE and gives up after maxRetries", async () => {
    const publicUrl = "https://billing.example.com/kore";
    const secret = "kore-secret";
    const rx = await receiver(
      (req, body) =>
        verifyKoreSignature({
          secrets: [secret],
          signature: req.headers["kore-signature"] as string | undefined,
          method: "POST",
          callbackUrl: publicUrl,
          rawBody: body,
        }).ok,
      () => 503,
    );
    try {
      const events = [...generateFleet({ ...base, sims: 2, to: FROM + H, envelope: "kore" })];
      const r = await sendDeliveries({
        url: rx.url,
        events,
        batchMin: 10,
        batchMax: 10,
        signing: { kind: "kore", secret, publicUrl },
        concurrency: 2,
        maxRetries: 2,
        retryBaseMs: 1,
      });
      expect(rx.bad()).toBe(0);
      expect(r.deliveries).toBe(0);
      expect(r.failedEvents).toBe(events.length);
      expect(r.retries).toBe(2 * r.failed);
      expect(r.statusCounts["503"]).toBe(3 * r.failed);
    } finally {
      await rx.close();
    }
  });
});
