import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { describe, expect, inject, it } from "vitest";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { INGEST_QUEUE } from "../../src/ingest/job.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { type SendProgress, type SendResult, sendDeliveries } from "../../src/simulate/output.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { type SimmeterProcess, startSimmeter } from "../helpers/process.ts";
import { memoryOf, queueDepth, truthRecord, waitDrained } from "./drill-helpers.ts";

const TOKEN = "kill-drill-token-0123456789abcdef";
const KORE_SECRET = "kill-drill-kore-secret";
const PUBLIC_URL = "https://billing.example.com/webhooks/event-streams";
const FROM = Date.UTC(2025, 0, 6);

describe("SIGKILL of the simmeter process mid-load, then a restart on the same port", () => {
  // The timeout only bounds a hung run: on a loaded 2-core machine (both test projects at once)
  // the drill took over 90 s; what it checks is counts, never time.
  it("nothing is lost and nothing is counted twice: usage equals the fleet's ground truth", async () => {
    const sim = simulateFleet({
      seed: 11,
      customers: 5,
      sims: 40,
      from: FROM,
      to: FROM + 2 * 86_400_000,
      perturb: { duplicateRate: 0.1, reorder: true },
    });
    const events = [...sim.events];
    const truth = truthRecord(sim.truth());
    const distinctSids = new Set(events.map((e) => (e.data as { event_sid: string }).event_sid));

    const prefix = `kill${randomUUID().slice(0, 8)}`;
    // closed in the finally below, after the process has stopped (PostgreSQL drops the database)
    const t = await openTestLedger({ file: true, autoClose: false });
    const env = {
      PORT: String(await freePort()),
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: prefix,
      ...t.env,
      PUBLIC_URL,
      TWILIO_AUTH_TOKEN: TOKEN,
      KORE_WEBHOOK_SECRET: KORE_SECRET,
      RETENTION_DAYS: "100000",
      // Short locks so the killed process's active job is recovered in seconds, not 30 s.
      WORKER_LOCK_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "1000",
    };
    let app: SimmeterProcess = await startSimmeter("start", env);
    const url = `${app.url}/webhooks/event-streams`;
    const connection = new Redis(env.REDIS_URL, { maxRetriesPerRequest: null });
    const queue = new Queue(INGEST_QUEUE, { connection, prefix });

    // Two senders, like a Twilio and a KORE sink, each retrying 5xx and connection errors with
    // backoff (100 ms doubling: retries 0..5 span ~3-6 s, far more than a restart needs).
    const progress = { twilio: 0, kore: 0 };
    const killAt = Math.ceil(events.length * 0.4);
    const kill: {
      acceptedEvents?: number;
      jobsAtKill?: Record<string, number>;
      memoryBeforeKill?: ReturnType<typeof memoryOf>;
      downMs?: number;
    } = {};
    let restarted: Promise<void> | undefined;
    const onProgress = (which: "twilio" | "kore") => (p: SendProgress) => {
      progress[which] = p.events;
      const accepted = progress.twilio + progress.kore;
      if (restarted || accepted < killAt) return;
      restarted = (async () => {
        kill.acceptedEvents = accepted;
        kill.memoryBeforeKill = memoryOf(app.child.pid);
        const t0 = performance.now();
        await app.kill();
        kill.jobsAtKill = (await queue.getJobCounts("waiting", "active", "delayed")) as Record<
          string,
          number
        >;
        app = await startSimmeter("start", env);
        kill.downMs = Math.round(performance.now() - t0);
      })();
    };
    const common = {
      batchMin: 1,
      batchMax: 5,
      concurrency: 8,
      maxRetries: 30,
      retryBaseMs: 100,
    };
    try {
      const t0 = performance.now();
      const results: SendResult[] = await Promise.all([
        sendDeliveries({
          ...common,
          url,
          events: events.filter((_, i) => i % 2 === 0),
          signing: { kind: "twilio", authToken: TOKEN, publicUrl: PUBLIC_URL },
          seed: 1,
          onProgress: onProgress("twilio"),
        }),
        sendDeliveries({
          ...common,
          url,
          events: events.filter((_, i) => i % 2 === 1),
          signing: { kind: "kore", secret: KORE_SECRET, publicUrl: PUBLIC_URL },
          seed: 2,
          onProgress: onProgress("kore"),
        }),
      ]);
      const sendMs = performance.now() - t0;
      expect(restarted, "the process was killed during the run").toBeDefined();
      await restarted;
      await waitDrained(app.adminUrl, t, 60_000);
      const depth = await queueDepth(app.adminUrl);
      const memoryAfter = memoryOf(app.child.pid);
      const usage = await t.usage();
      const seen = (await t.sql<{ n: number }>("select count(*) as n from seen_events"))[0]?.n;
      const quarantined = (await t.sql<{ n: number }>("select count(*) as n from quarantine"))[0]
        ?.n;

      console.log(
        `kill drill summary: ${JSON.stringify(
          {
            backend: t.backend,
            events: events.length,
            distinctEvents: distinctSids.size,
            killAtEvents: killAt,
            kill,
            sendSeconds: Math.round(sendMs / 100) / 10,
            senders: results.map((r) => ({
              deliveries: r.deliveries,
              events: r.events,
              retries: r.retries,
              failed: r.failed,
              rejected4xx: r.rejected4xx,
              statusCounts: r.statusCounts,
            })),
            depthAfterDrain: depth,
            memoryAfterRestartAndDrain: memoryAfter,
          },
          null,
          2,
        )}`,
      );

      for (const r of results) {
        expect(r.failed, "deliveries given up after all retries").toBe(0);
        expect(r.rejected4xx, "deliveries answered 4xx (lost: never retried)").toBe(0);
      }
      expect(results.reduce((n, r) => n + r.events, 0)).toBe(events.length);
      // The kill was felt: some deliveries failed to connect and were retried.
      expect(results.reduce((n, r) => n + r.retries, 0)).toBeGreaterThan(0);
      expect(depth.failed ?? 0, "jobs parked as failed").toBe(0);
      expect(quarantined, "real events quarantined").toBe(0);
      expect(seen, "distinct events counted").toBe(distinctSids.size);
      expect(usage).toEqual(truth);
      expect(memoryAfter.rssMb).toBeLessThan(400);
    } finally {
      await app.stop();
      await queue.close();
      connection.disconnect();
      await t.close();
    }
  }, 240_000);
});
