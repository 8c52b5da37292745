// In-process ingest throughput: simulator-made deliveries through ingestDeliveries into a temporary
// file database with the real migrations (openDb), no Redis, no HTTP. It measures the SQLite
// transaction per job alone, for jobs of 100 and of 2,000 events (deliveries of 100 events each,
// grouped as the receiver groups them).
//
//   npx tsx scripts/bench-ingest.ts [--rounds 5] [--sims 1000] [--hours 4] [--sizes 100,2000]
//                                   [--src DIR[,DIR…]]
//
// --src measures other copies of src/ (e.g. a saved baseline with its drizzle/ beside it and
// node_modules reachable): with several, rounds alternate between them in this one process, so
// a noisy machine slows each about equally. Besides events per second of wall time it prints
// events per second of this process's CPU time, which other tenants disturb less.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { simulateFleet } from "../src/simulate/fleet.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    sims: { type: "string", default: "1000" },
    hours: { type: "string", default: "4" },
    sizes: { type: "string", default: "100,2000" },
    src: { type: "string", default: resolve(import.meta.dirname, "../src") },
  },
});

type Delivery = { id: string; receivedAt: number; source: "twilio"; body: string };
type Job = { v: 1; deliveries: Delivery[] };
type Db = { $client: { close(): void } };
type Impl = {
  src: string;
  openDb(path: string): Db;
  prepareIngest(db: Db): unknown;
  ingestDeliveries(ctx: unknown, job: Job): { counted: number };
};

async function load(dir: string): Promise<Impl> {
  const src = resolve(dir);
  const client = await import(pathToFileURL(join(src, "db/client.ts")).href);
  const ingest = await import(pathToFileURL(join(src, "ingest/ingest.ts")).href);
  return { src, openDb: client.openDb, ...ingest } as Impl;
}
const impls: Impl[] = [];
for (const dir of args.src.split(",")) impls.push(await load(dir));

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
const settings = {
  billingMode: "realtime" as const,
  attribution: "end" as const,
  retentionDays: 100_000,
  maxBytesPerSecond: 250e6,
};

function jobsOf(size: number): Job[] {
  const jobs: Job[] = [];
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

type Result = { wall: number; cpu: number };

function round(impl: Impl, jobs: Job[]): Result {
  const dir = mkdtempSync(join(os.tmpdir(), "bench-ingest-"));
  const db = impl.openDb(join(dir, "ledger.db"));
  const ctx = { db, stmts: impl.prepareIngest(db), settings, now: () => to + HOUR_MS };
  let counted = 0;
  const start = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  for (const job of jobs) counted += impl.ingestDeliveries(ctx, job).counted;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  db.$client.close();
  rmSync(dir, { recursive: true, force: true });
  if (counted === 0) throw new Error("nothing counted: the bench is broken");
  return { wall: events.length / seconds, cpu: events.length / ((cpu.user + cpu.system) / 1e6) };
}

const rounds = Number(args.rounds);
const sizes = args.sizes.split(",").map(Number);
const jobSets = new Map(sizes.map((s) => [s, jobsOf(s)]));
const results = new Map<string, Result[]>();
// Warm-up: JIT, statement caches, page cache.
for (const impl of impls) round(impl, jobsOf(100).slice(0, 30));
for (let r = 0; r < rounds; r++) {
  for (const size of sizes) {
    for (const impl of r % 2 === 0 ? impls : [...impls].reverse()) {
      const key = `${impl.src}|${size}`;
      results.set(key, [...(results.get(key) ?? []), round(impl, jobSets.get(size) ?? [])]);
    }
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const stats = (xs: number[]) => {
  const v = [...xs].sort((a, b) => a - b);
  const median = v[Math.floor(v.length / 2)] ?? 0;
  return `min ${fmt(v[0] ?? 0)}  median ${fmt(median)}  max ${fmt(v[v.length - 1] ?? 0)}`;
};
console.log(`${events.length} events (${args.sims} SIMs, ${args.hours} h), ${rounds} rounds`);
for (const impl of impls) {
  console.log(`src: ${impl.src}`);
  for (const size of sizes) {
    const r = results.get(`${impl.src}|${size}`) ?? [];
    const label = `  jobs of ${String(size).padStart(5)} events`;
    console.log(`${label}: events/s ${stats(r.map((x) => x.wall))}`);
    console.log(`${label}: events per CPU-second ${stats(r.map((x) => x.cpu))}`);
  }
}
