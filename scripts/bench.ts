// npm run bench: measures simmeter on this machine, side by side with a bare Express yardstick,
// and writes BENCHMARKS.md. Every figure comes from this run; nothing is asserted here.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import Database from "better-sqlite3";
import { Redis } from "ioredis";
import { assignCustomer } from "../src/customers/customers.ts";
import { openDb } from "../src/db/client.ts";
import { ingestDeliveries, prepareIngest } from "../src/ingest/ingest.ts";
import { createLogger } from "../src/lib/logger.ts";
import { signTwilio } from "../src/receive/twilio-signature.ts";
import { runReport } from "../src/reporting/reporter.ts";
import { createStripe } from "../src/reporting/stripe.ts";
import { ensureMeter } from "../src/reporting/stripe-setup.ts";
import { simulateFleet } from "../src/simulate/fleet.ts";
import { writeEventsJsonl } from "../src/simulate/output.ts";
import { freePort, startRedis } from "./lib/redis-server.ts";
import { waitFor } from "./lib/wait.ts";
import { startStripeEmulator } from "./stripe-emulator.ts";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    out: { type: "string", default: "BENCHMARKS.md" },
    "replay-events": { type: "string" },
    /** run one measurement only and print it (no BENCHMARKS.md): e2e100|e2e1|receiver|latency|stripe|replay */
    only: { type: "string" },
  },
});
const QUICK = args.quick;
const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin/simmeter.mjs");
const WORK = join(ROOT, "data", "bench");
const TOKEN = "bench-token-0123456789abcdef0123";
const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);

// Measure what `npm install` produces: the compiled build (bin/simmeter.mjs would otherwise fall
// back to running the TypeScript sources, which costs ~50 MB per process).
execFileSync(process.execPath, [join(ROOT, "scripts/build.mjs")], { cwd: ROOT, stdio: "inherit" });
rmSync(WORK, { recursive: true, force: true });
mkdirSync(WORK, { recursive: true });

type Proc = { child: ChildProcess; port: number; stop: () => Promise<void> };

/** A memory figure of a live process from /proc, in MB: VmHWM is the peak, VmRSS the current. */
function procMb(pid: number | undefined, field: "VmHWM" | "VmRSS"): number {
  if (!pid) return 0;
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(
      readFileSync(`/proc/${pid}/status`, "utf8"),
    );
    return m?.[1] ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}
const peakRssMb = (pid: number | undefined) => procMb(pid, "VmHWM");
const rssMb = (pid: number | undefined) => procMb(pid, "VmRSS");

async function spawnSimmeter(role: "serve" | "work", env: Record<string, string>): Promise<Proc> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  const child = spawn(process.execPath, [BIN, role], {
    env: {
      ...process.env,
      ...env,
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_LEVEL: role === "work" ? "info" : "warn",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr?.on("data", (d) => {
    err += d;
  });
  if (role === "serve") {
    await waitFor(
      async () => {
        try {
          return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      "simmeter serve",
      30_000,
      100,
    );
  } else {
    await waitFor(() => err.includes("ingest worker running"), "simmeter work", 30_000, 50);
  }
  return {
    child,
    port,
    stop: () =>
      new Promise<void>((r) => {
        if (child.exitCode !== null) return r();
        child.once("exit", () => r());
        child.kill("SIGTERM");
      }),
  };
}

async function spawnYardstick(): Promise<Proc> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "scripts/bench-yardstick.ts")],
    {
      env: { ...process.env, PORT: String(port) },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  await waitFor(
    async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/`)).status === 404;
      } catch {
        return false;
      }
    },
    "yardstick",
    30_000,
    100,
  );
  return {
    child,
    port,
    stop: () =>
      new Promise<void>((r) => {
        child.once("exit", () => r());
        child.kill("SIGTERM");
      }),
  };
}

type Body = { path: string; body: string; signature: string };

function signedBodies(events: unknown[], perDelivery: number, publicUrl: string): Body[] {
  const out: Body[] = [];
  for (let i = 0; i < events.length; i += perDelivery) {
    const body = JSON.stringify(events.slice(i, i + perDelivery));
    const s = signTwilio(TOKEN, publicUrl, body);
    out.push({
      path: `/webhooks/event-streams${s.url.slice(s.url.indexOf("?"))}`,
      body,
      signature: s.signature,
    });
  }
  return out;
}

type Cannon = {
  requestsPerSec: number;
  seconds: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  sent: number;
};

async function cannon(
  port: number,
  bodies: Body[],
  o: { connections: number; overallRate?: number; duration?: number },
): Promise<Cannon> {
  let i = 0;
  const started = Date.now();
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: o.connections,
    ...(o.overallRate
      ? { overallRate: o.overallRate, duration: o.duration ?? 10 }
      : { amount: bodies.length }),
    requests: [
      {
        method: "POST",
        setupRequest: (req: autocannon.Request) => {
          const b = bodies[i++ % bodies.length] as Body;
          return {
            ...req,
            path: b.path,
            body: b.body,
            headers: { "content-type": "application/json", "x-twilio-signature": b.signature },
          };
        },
      },
    ],
  });
  const seconds = (Date.now() - started) / 1000;
  return {
    requestsPerSec: Math.round(result.requests.total / seconds),
    seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
    sent: result.requests.total,
  };
}

function fleetEvents(n: number, seed: number): unknown[] {
  const to = Math.floor(Date.now() / 60_000) * 60_000;
  const events: unknown[] = [];
  for (let s = seed; events.length < n; s++) {
    const sim = simulateFleet({ seed: s, customers: 20, sims: 4000, from: to - 6 * 3_600_000, to });
    for (const e of sim.events) {
      events.push(e);
      if (events.length >= n) break;
    }
  }
  return events;
}

/** End to end: first request sent → every event counted in SQLite. */
async function endToEnd(
  redisUrl: string,
  name: string,
  events: unknown[],
  perDelivery: number,
  connections: number,
) {
  const db = join(WORK, `${name}.db`);
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}/webhooks/event-streams`;
  const env = {
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `bench${name}`,
    DATABASE_PATH: db,
    TWILIO_AUTH_TOKEN: TOKEN,
    PUBLIC_URL: publicUrl,
  };
  const work = await spawnSimmeter("work", env);
  const serve = await spawnSimmeter("serve", { ...env, PORT: String(port) });
  const bodies = signedBodies(
    events,
    perDelivery,
    `http://127.0.0.1:${serve.port}/webhooks/event-streams`,
  );
  const unique = new Set(events.map((e) => (e as { data: { event_sid: string } }).data.event_sid))
    .size;
  const reader = () => new Database(db, { readonly: true, fileMustExist: true });
  const t0 = Date.now();
  const c = await cannon(serve.port, bodies, { connections });
  const acked = Date.now();
  let counted = 0;
  await waitFor(
    () => {
      const d = reader();
      try {
        counted = (d.prepare("select count(*) as n from seen_events").get() as { n: number }).n;
      } finally {
        d.close();
      }
      return counted >= unique;
    },
    `${name}: all ${unique} events counted`,
    600_000,
    100,
  );
  const done = Date.now();
  const r = {
    deliveries: bodies.length,
    events: events.length,
    ackSeconds: (acked - t0) / 1000,
    endToEndSeconds: (done - t0) / 1000,
    eventsPerSecond: Math.round(events.length / ((done - t0) / 1000)),
    deliveriesAckedPerSecond: c.requestsPerSec,
    non2xx: c.non2xx,
    errors: c.errors,
    peakRssServeMb: peakRssMb(serve.child.pid),
    peakRssWorkMb: peakRssMb(work.child.pid),
  };
  await serve.stop();
  await work.stop();
  log(`${name}: ${JSON.stringify(r)}`);
  return r;
}

/** The receiver alone (no worker competing for the 2 cores): the like-for-like yardstick comparison. */
async function receiverOnly(redisUrl: string, events: unknown[], connections: number) {
  const port = await freePort();
  const env = {
    REDIS_URL: redisUrl,
    REDIS_PREFIX: "benchrecv",
    DATABASE_PATH: join(WORK, "recv.db"),
    TWILIO_AUTH_TOKEN: TOKEN,
    PUBLIC_URL: `http://127.0.0.1:${port}/webhooks/event-streams`,
    PORT: String(port),
  };
  const serve = await spawnSimmeter("serve", env);
  const bodies = signedBodies(events, 1, env.PUBLIC_URL);
  const c = await cannon(serve.port, bodies, { connections });
  const r = {
    deliveriesPerSecond: c.requestsPerSec,
    p50Ms: c.p50,
    p99Ms: c.p99,
    non2xx: c.non2xx,
    peakRssMb: peakRssMb(serve.child.pid),
  };
  await serve.stop();
  log(`receiver only: ${JSON.stringify(r)}`);
  return r;
}

async function yardstick(events: unknown[], perDelivery: number, connections: number) {
  const y = await spawnYardstick();
  const bodies = signedBodies(
    events,
    perDelivery,
    `http://127.0.0.1:${y.port}/webhooks/event-streams`,
  );
  const c = await cannon(y.port, bodies, { connections });
  const rss = peakRssMb(y.child.pid);
  await y.stop();
  log(`yardstick ${perDelivery}: ${JSON.stringify(c)}`);
  return { deliveriesPerSecond: c.requestsPerSec, peakRssMb: rss };
}

async function ackLatency(redisUrl: string, rate: number, seconds: number) {
  const db = join(WORK, "latency.db");
  const port = await freePort();
  const env = {
    REDIS_URL: redisUrl,
    REDIS_PREFIX: "benchlat",
    DATABASE_PATH: db,
    TWILIO_AUTH_TOKEN: TOKEN,
    PUBLIC_URL: `http://127.0.0.1:${port}/webhooks/event-streams`,
  };
  const work = await spawnSimmeter("work", env);
  const serve = await spawnSimmeter("serve", { ...env, PORT: String(port) });
  const events = fleetEvents(rate * seconds + rate, 900);
  const bodies = signedBodies(events, 1, `http://127.0.0.1:${serve.port}/webhooks/event-streams`);
  const c = await cannon(serve.port, bodies, {
    connections: 50,
    overallRate: rate,
    duration: seconds,
  });
  const r = {
    rate,
    seconds,
    achieved: c.requestsPerSec,
    p50Ms: c.p50,
    p99Ms: c.p99,
    non2xx: c.non2xx,
    peakRssServeMb: peakRssMb(serve.child.pid),
    peakRssWorkMb: peakRssMb(work.child.pid),
  };
  await serve.stop();
  await work.stop();
  log(`latency: ${JSON.stringify(r)}`);
  return r;
}

/** Realistic reporting: events arrive over 6 hours, the reporter runs every 5 minutes. */
async function stripeCalls(redisUrl: string) {
  const to = Math.floor(Date.now() / 3_600_000) * 3_600_000;
  const from = to - 6 * 3_600_000;
  const sim = simulateFleet({ seed: 77, customers: 50, sims: QUICK ? 500 : 2000, from, to });
  const events = [...sim.events] as { data: { timestamp: string } }[];
  const truth = sim.truth();
  const emu = await startStripeEmulator({ acceptAnyCustomer: true });
  const stripe = createStripe({
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    STRIPE_TIMEOUT_MS: 10_000,
  });
  await ensureMeter(stripe, "supersim_data_bytes");
  const db = openDb(join(WORK, "stripe.db"));
  const clock = { now: from };
  const ctx = {
    db,
    stmts: prepareIngest(db),
    settings: {
      billingMode: "realtime" as const,
      attribution: "end" as const,
      retentionDays: 40,
      maxBytesPerSecond: 250e6,
    },
    now: () => clock.now,
  };
  for (const [simSid, customer] of Object.entries(truth.customers)) {
    assignCustomer({
      db,
      now: from,
      input: {
        targetType: "sim",
        targetId: simSid,
        customerId: customer,
        effectiveFrom: from - 3_600_000,
      },
    });
  }
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const logger = createLogger("silent");
  const settings = {
    eventName: "supersim_data_bytes",
    graceSeconds: 3600,
    concurrency: 4,
    timeoutMs: 10_000,
    attemptsPerRun: 6,
    redisPrefix: "benchstripe",
  };
  let i = 0;
  let runs = 0;
  for (let t = from + 300_000; t <= to + 300_000; t += 300_000) {
    const chunk: unknown[] = [];
    while (
      i < events.length &&
      Date.parse((events[i] as { data: { timestamp: string } }).data.timestamp) < t
    )
      chunk.push(events[i++]);
    clock.now = t;
    if (chunk.length)
      ingestDeliveries(ctx, {
        v: 1,
        deliveries: [{ id: `c${t}`, receivedAt: t, source: "replay", events: chunk }],
      });
    await runReport({ db, stripe, redis, logger, settings, now: () => clock.now });
    runs++;
  }
  const calls = emu.stats().meterEventCalls;
  const reported = [...emu.totalsByCustomer("supersim_data_bytes").values()].reduce(
    (a, b) => a + b,
    0,
  );
  const r = {
    events: events.length,
    customers: 50,
    sims: QUICK ? 500 : 2000,
    hours: 6,
    reporterRuns: runs,
    stripeCalls: calls,
    callsPer100kEvents: Math.round((calls / events.length) * 100_000),
    reportedBytes: reported,
    truthBytes: truth.totalBytes,
  };
  redis.disconnect();
  db.$client.close();
  await emu.close();
  log(`stripe: ${JSON.stringify(r)}`);
  return r;
}

async function replayMillion(redisUrl: string, n: number) {
  const file = join(WORK, "replay.jsonl");
  const to = Math.floor(Date.now() / 60_000) * 60_000;
  const hours = Math.ceil(n / (8 * 1000)) + 1;
  const sim = simulateFleet({
    seed: 5,
    customers: 50,
    sims: 1000,
    from: to - hours * 3_600_000,
    to,
  });
  let written = 0;
  async function* limited() {
    for (const e of sim.events) {
      if (written++ >= n) return;
      yield e;
    }
  }
  const w = await writeEventsJsonl(file, limited());
  const child = spawn(process.execPath, [BIN, "replay", file], {
    env: {
      ...process.env,
      REDIS_URL: redisUrl,
      REDIS_PREFIX: "benchreplay",
      DATABASE_PATH: join(WORK, "replay.db"),
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  const samples: number[] = [];
  const timer = setInterval(() => samples.push(rssMb(child.pid)), 1000);
  const t0 = Date.now();
  await new Promise((r) => child.once("exit", r));
  clearInterval(timer);
  const secs = (Date.now() - t0) / 1000;
  const summary = JSON.parse(out.trim().split("\n").pop() ?? "{}");
  const q = (p: number) =>
    samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? 0;
  const r = {
    events: w.events,
    fileMb: Math.round(w.bytes / 1e6),
    seconds: Math.round(secs),
    eventsPerSecond: Math.round(w.events / secs),
    counted: summary.counted,
    rssMbAt: { "10%": q(0.1), "50%": q(0.5), "90%": q(0.9), max: Math.max(0, ...samples) },
  };
  rmSync(file, { force: true });
  log(`replay: ${JSON.stringify(r)}`);
  return r;
}

function machine() {
  let redis = "";
  try {
    redis =
      execFileSync("redis-server", ["--version"], { encoding: "utf8" })
        .trim()
        .split(" ")
        .find((x) => x.startsWith("v="))
        ?.slice(2) ?? "";
  } catch {}
  return {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? "",
    memGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    redis,
    os: `${os.type()} ${os.release()}`,
  };
}

async function main() {
  const redis = await startRedis();
  try {
    const m = machine();
    log(`machine: ${JSON.stringify(m)}`);
    if (args.only === "latency") {
      log(JSON.stringify(await ackLatency(redis.url, 1000, QUICK ? 5 : 15)));
      return;
    }
    const nBig = QUICK ? 20_000 : 100_000;
    const nSmall = QUICK ? 5_000 : 30_000;
    const big = fleetEvents(nBig, 1);
    const small = fleetEvents(nSmall, 500);
    const e2e100 = await endToEnd(redis.url, "e2e100", big, 100, 16);
    const e2e1 = await endToEnd(redis.url, "e2e1", small, 1, 64);
    const recv1 = await receiverOnly(redis.url, small, 64);
    const y100 = await yardstick(big, 100, 16);
    const y1 = await yardstick(small, 1, 64);
    // p99 at a fixed rate swings widely on a shared 2-core machine: measure three times, report all.
    const latencies = [];
    for (let i = 0; i < 3; i++) latencies.push(await ackLatency(redis.url, 1000, QUICK ? 5 : 15));
    const byP99 = [...latencies].sort((a, b) => a.p99Ms - b.p99Ms);
    const latency = {
      ...(byP99[1] as (typeof latencies)[number]),
      p99AllMs: latencies.map((l) => l.p99Ms),
    };
    const stripe = await stripeCalls(redis.url);
    const replay = await replayMillion(
      redis.url,
      Number(args["replay-events"] ?? (QUICK ? 100_000 : 1_000_000)),
    );
    const results = {
      date: new Date().toISOString(),
      command: `npm run bench${QUICK ? " -- --quick" : ""}`,
      machine: m,
      e2e100,
      e2e1,
      receiver1: recv1,
      yardstick100: y100,
      yardstick1: y1,
      latency,
      stripe,
      replay,
    };
    writeFileSync(join(WORK, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(resolve(ROOT, args.out as string), render(results));
    log(`wrote ${args.out} and ${join(WORK, "results.json")}`);
  } finally {
    await redis.stop();
  }
}

type Results = {
  date: string;
  command: string;
  machine: ReturnType<typeof machine>;
  e2e100: Awaited<ReturnType<typeof endToEnd>>;
  e2e1: Awaited<ReturnType<typeof endToEnd>>;
  receiver1: Awaited<ReturnType<typeof receiverOnly>>;
  yardstick100: Awaited<ReturnType<typeof yardstick>>;
  yardstick1: Awaited<ReturnType<typeof yardstick>>;
  latency: Awaited<ReturnType<typeof ackLatency>> & { p99AllMs: number[] };
  stripe: Awaited<ReturnType<typeof stripeCalls>>;
  replay: Awaited<ReturnType<typeof replayMillion>>;
};

const n = (x: number) => x.toLocaleString("en-US");
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : "n/a");
const mark = (ok: boolean) => (ok ? "met" : "**missed**");

function render(r: Results): string {
  const maxRss = Math.max(
    r.e2e100.peakRssServeMb,
    r.e2e100.peakRssWorkMb,
    r.e2e1.peakRssServeMb,
    r.e2e1.peakRssWorkMb,
    r.latency.peakRssServeMb,
    r.latency.peakRssWorkMb,
  );
  const ratio1 = r.receiver1.deliveriesPerSecond / r.yardstick1.deliveriesPerSecond;
  const ratio1Loaded = r.e2e1.deliveriesAckedPerSecond / r.yardstick1.deliveriesPerSecond;
  return `# Benchmarks

Measured by \`${r.command}\` on ${r.date.slice(0, 10)} (${r.date}).
Machine: ${r.machine.cpus} × ${r.machine.cpu}, ${r.machine.memGb} GiB, ${r.machine.os}, Node ${r.machine.node}, Redis ${r.machine.redis}.
Load generator (autocannon, in the bench process), Redis, \`simmeter serve\` and \`simmeter work\` all share these cores,
so the figures are conservative; runs on this shared machine vary by up to ~2× (see queue-and-storage.md §1).
Deliveries are Twilio-signed (X-Twilio-Signature + bodySHA256) and verified; events come from the fleet simulator.

## Against the targets

| Measure | Result | Target | |
|---|---|---|---|
| End-to-end ingest, 100-event deliveries (first request → every event counted in SQLite) | ${n(r.e2e100.eventsPerSecond)} events/s | ≥ 25,000 events/s | ${mark(r.e2e100.eventsPerSecond >= 25_000)} |
| 1-event deliveries acknowledged by the receiver / bare Express yardstick (same client, same payloads, nothing else running) | ${n(r.receiver1.deliveriesPerSecond)} / ${n(r.yardstick1.deliveriesPerSecond)} deliveries/s = ${ratio1.toFixed(2)} | ≥ 0.7 | ${mark(ratio1 >= 0.7)} |
| The same while the worker ingests on the same 2 cores (end-to-end run) | ${n(r.e2e1.deliveriesAckedPerSecond)} / ${n(r.yardstick1.deliveriesPerSecond)} = ${ratio1Loaded.toFixed(2)} | (context) | |
| Receiver ack latency at ${n(r.latency.rate)} deliveries/s (1 event each, worker ingesting alongside), median of 3 runs of ${r.latency.seconds} s | p50 ${r.latency.p50Ms} ms, p99 ${r.latency.p99Ms} ms (the 3 runs' p99: ${r.latency.p99AllMs.join(", ")} ms) | p99 ≤ 50 ms | ${mark(r.latency.p99Ms <= 50)} |
| Peak RSS per process under load (receiver, worker) | ${maxRss} MB | ≤ 300 MB | ${mark(maxRss <= 300)} |
| Replay of ${n(r.replay.events)} events | ${n(r.replay.eventsPerSecond)} events/s; RSS ${r.replay.rssMbAt["10%"]} → ${r.replay.rssMbAt["50%"]} → ${r.replay.rssMbAt["90%"]} MB (10/50/90 % of the run) | flat memory (90 % within 25 % of 10 %) | ${mark(r.replay.rssMbAt["90%"] <= r.replay.rssMbAt["10%"] * 1.25)} |
| Peak RSS of the replay process (CLI + its own worker) | ${r.replay.rssMbAt.max} MB | ≤ 300 MB | ${mark(r.replay.rssMbAt.max <= 300)} |
| Stripe calls per 100,000 events | ${n(r.stripe.callsPer100kEvents)} | (measured) | |

## Detail

| Run | Deliveries | Events | Acked in | Counted in | Events/s end-to-end | Deliveries acked/s | Yardstick deliveries/s | Ratio | Peak RSS serve / work |
|---|---|---|---|---|---|---|---|---|---|
| 100 events per delivery | ${n(r.e2e100.deliveries)} | ${n(r.e2e100.events)} | ${r.e2e100.ackSeconds.toFixed(1)} s | ${r.e2e100.endToEndSeconds.toFixed(1)} s | ${n(r.e2e100.eventsPerSecond)} | ${n(r.e2e100.deliveriesAckedPerSecond)} | ${n(r.yardstick100.deliveriesPerSecond)} | ${ratio(r.e2e100.deliveriesAckedPerSecond, r.yardstick100.deliveriesPerSecond)} | ${r.e2e100.peakRssServeMb} / ${r.e2e100.peakRssWorkMb} MB |
| 1 event per delivery | ${n(r.e2e1.deliveries)} | ${n(r.e2e1.events)} | ${r.e2e1.ackSeconds.toFixed(1)} s | ${r.e2e1.endToEndSeconds.toFixed(1)} s | ${n(r.e2e1.eventsPerSecond)} | ${n(r.e2e1.deliveriesAckedPerSecond)} | ${n(r.yardstick1.deliveriesPerSecond)} | ${ratio1Loaded.toFixed(2)} | ${r.e2e1.peakRssServeMb} / ${r.e2e1.peakRssWorkMb} MB |
| 1 event per delivery, receiver alone | ${n(r.e2e1.deliveries)} | ${n(r.e2e1.events)} | | | | ${n(r.receiver1.deliveriesPerSecond)} (p50 ${r.receiver1.p50Ms} ms, p99 ${r.receiver1.p99Ms} ms) | ${n(r.yardstick1.deliveriesPerSecond)} | ${ratio1.toFixed(2)} | ${r.receiver1.peakRssMb} MB / – |

Yardstick peak RSS: ${r.yardstick100.peakRssMb} MB (100-event run), ${r.yardstick1.peakRssMb} MB (1-event run). Non-2xx answers: simmeter ${r.e2e100.non2xx + r.e2e1.non2xx}, errors ${r.e2e100.errors + r.e2e1.errors}.

Stripe calls: ${n(r.stripe.events)} events from ${n(r.stripe.sims)} SIMs of ${r.stripe.customers} customers over ${r.stripe.hours} hours, ingested in 5-minute slices with the reporter run after each (${r.stripe.reporterRuns} runs, as \`REPORT_INTERVAL_SECONDS=300\` would): ${n(r.stripe.stripeCalls)} meter-event calls. Reported ${n(r.stripe.reportedBytes)} bytes; simulator ground truth ${n(r.stripe.truthBytes)} bytes.

Replay: \`simmeter replay\` of a ${n(r.replay.fileMb)} MB JSON-lines file (${n(r.replay.events)} events, counted ${n(r.replay.counted ?? 0)}) in ${r.replay.seconds} s with its own in-process worker; RSS sampled every second.

Raw numbers: \`data/bench/results.json\` after a run.

${readFileSync(join(ROOT, "docs/benchmark-analysis.md"), "utf8")}`;
}

await main();
