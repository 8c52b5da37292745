// In-process ingest throughput on PostgreSQL: simulator-made deliveries through ingestJobPg
// (src/ledger/pg/ingest.ts) into a private cluster with PostgreSQL's durable defaults (fsync on:
// startPostgres({ settings: "production" })), no Redis, no HTTP. Jobs of 100 and of 2,000 events
// (deliveries of 100 events each, as the receiver groups them), by 1, 2 and 4 concurrent workers,
// each with its own connection; every job goes to one worker. Each round runs on a fresh database
// cloned from a migrated template.
//
//   npx tsx scripts/bench-ingest-pg.ts [--rounds 3] [--sims 1000] [--hours 4] [--sizes 100,2000]
//                                      [--workers 1,2,4]
//
// Prints events per second of wall time (min/median/max over the rounds) and the per-job
// latency (min/median/max over every job of every round), and the retries lock conflicts caused.
import { parseArgs } from "node:util";
import pg from "pg";
import { createPool, migratePg } from "../src/db/pg/client.ts";
import type { Delivery, IngestJobData } from "../src/ingest/job.ts";
import type { IngestSettings } from "../src/ingest/unit-of-work.ts";
import { ingestJobPg } from "../src/ledger/pg/ingest.ts";
import { simulateFleet } from "../src/simulate/fleet.ts";
import { startPostgres, withDatabase } from "./lib/postgres-server.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    sims: { type: "string", default: "1000" },
    hours: { type: "string", default: "4" },
    sizes: { type: "string", default: "100,2000" },
    workers: { type: "string", default: "1,2,4" },
  },
});

const HOUR_MS = 3_600_000;
const to = Math.floor(Date.UTC(2026, 0, 10) / HOUR_MS) * HOUR_MS;
const from = to - Number(args.hours) * HOUR_MS;
// Realistic noise: 2 % duplicates and local reordering, as Event Streams delivers them.
const sim = simulateFleet({
  seed: 11,
  customers: 20,
  sims: Number(args.sims),
  from,
  to,
  perturb: { duplicateRate: 0.02, reorder: true },
});
const events = [...sim.events];
const settings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250e6,
};

function jobsOf(size: number): IngestJobData[] {
  const jobs: IngestJobData[] = [];
  let d = 0;
  for (let i = 0; i < events.length; i += size) {
    const slice = events.slice(i, i + size);
    const deliveries: Delivery[] = [];
    for (let j = 0; j < slice.length; j += 100) {
      deliveries.push({
        id: `d${d++}`,
        receivedAt: to,
        source: "twilio",
        body: JSON.stringify(slice.slice(j, j + 100)),
      });
    }
    jobs.push({ v: 1, deliveries });
  }
  return jobs;
}

const server = await startPostgres({ settings: "production" });
const admin = new pg.Client({ connectionString: server.url });
await admin.connect();
let dbSeq = 0;

try {
  await admin.query("create database bench_template");
  await migratePg(withDatabase(server.url, "bench_template"));

  type Result = { eventsPerSecond: number; jobMs: number[]; retries: number };

  async function round(jobs: IngestJobData[], workers: number): Promise<Result> {
    const name = `bench_${dbSeq++}`;
    await admin.query(`create database ${name} template bench_template`);
    const url = withDatabase(server.url, name);
    const pools = Array.from({ length: workers }, () => createPool(url, { role: "bench", max: 1 }));
    try {
      // one connection per worker, opened before the clock starts
      await Promise.all(pools.map((p) => p.query("select 1")));
      const jobMs: number[] = [];
      let retries = 0;
      let counted = 0;
      let next = 0;
      const start = performance.now();
      await Promise.all(
        pools.map(async (pool) => {
          for (let i = next++; i < jobs.length; i = next++) {
            const t0 = performance.now();
            const s = await ingestJobPg(pool, jobs[i] as IngestJobData, settings, to + HOUR_MS, {
              onRetry: () => {
                retries++;
              },
            });
            jobMs.push(performance.now() - t0);
            counted += s.counted;
          }
        }),
      );
      const seconds = (performance.now() - start) / 1000;
      if (counted === 0) throw new Error("nothing counted: the bench is broken");
      return { eventsPerSecond: events.length / seconds, jobMs, retries };
    } finally {
      await Promise.all(pools.map((p) => p.end()));
      await admin.query(`drop database ${name} with (force)`);
    }
  }

  const rounds = Number(args.rounds);
  const sizes = args.sizes.split(",").map(Number);
  const workerCounts = args.workers.split(",").map(Number);
  const jobSets = new Map(sizes.map((s) => [s, jobsOf(s)]));
  // Warm-up: JIT, the server's caches.
  await round(jobsOf(100).slice(0, 50), 1);
  const results = new Map<string, Result[]>();
  for (let r = 0; r < rounds; r++) {
    for (const size of sizes) {
      for (const w of workerCounts) {
        const key = `${size}|${w}`;
        results.set(key, [...(results.get(key) ?? []), await round(jobSets.get(size) ?? [], w)]);
      }
    }
  }

  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  const ms = (n: number) => n.toFixed(1);
  const stats = (xs: number[], f: (n: number) => string) => {
    const v = [...xs].sort((a, b) => a - b);
    const median = v[Math.floor(v.length / 2)] ?? 0;
    return `min ${f(v[0] ?? 0)}  median ${f(median)}  max ${f(v[v.length - 1] ?? 0)}`;
  };
  console.log(
    `${events.length} events (${args.sims} SIMs, ${args.hours} h), ${rounds} rounds, PostgreSQL (fsync on) at ${server.bin}`,
  );
  for (const size of sizes) {
    for (const w of workerCounts) {
      const rs = results.get(`${size}|${w}`) ?? [];
      const label = `  jobs of ${String(size).padStart(5)} events, ${w} worker${w > 1 ? "s" : " "}`;
      console.log(
        `${label}: events/s ${stats(
          rs.map((x) => x.eventsPerSecond),
          fmt,
        )}`,
      );
      console.log(
        `${label}: ms per job ${stats(
          rs.flatMap((x) => x.jobMs),
          ms,
        )}  retries ${rs.reduce((a, x) => a + x.retries, 0)}`,
      );
    }
  }
} finally {
  await admin.end();
  await server.stop();
}
