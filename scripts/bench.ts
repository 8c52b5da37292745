// npm run bench: measures simmeter on this machine, side by side with a bare Express yardstick,
// and writes BENCHMARKS.md. Every figure comes from this run; nothing is asserted here.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import Database from "better-sqlite3";
import { Redis } from "ioredis";
import { DAY_MS, HOUR_MS, hourStart } from "../src/accounting/buckets.ts";
import { assignCustomer } from "../src/customers/customers.ts";
import { openDb } from "../src/db/client.ts";
import { ingestDeliveries, prepareIngest } from "../src/ingest/ingest.ts";
import { sqliteLedger } from "../src/ledger/sqlite/index.ts";
import { createLogger } from "../src/lib/logger.ts";
import { signTwilio } from "../src/receive/twilio-signature.ts";
import { meterEventIdentifier } from "../src/reporting/plan.ts";
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
    /**
     * run one measurement only: latency prints it; planning prints it and rewrites only its
     * section of BENCHMARKS.md
     */
    only: { type: "string" },
    /**
     * --only e2e100: the 100-event end-to-end run and its yardstick, `--rounds` times, each round
     * running every tree of `--trees` (comma-separated checkouts, each built; default this one)
     * in turn, interleaved, so a before/after comparison shares the machine's moments
     */
    trees: { type: "string" },
    rounds: { type: "string", default: "3" },
    /** --only e2e100: write a CPU profile of each `simmeter work` process into this folder */
    "cpu-prof": { type: "string" },
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

async function spawnSimmeter(
  role: "serve" | "work",
  env: Record<string, string>,
  bin = BIN,
  nodeFlags: string[] = [],
): Promise<Proc> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  const adminPort = env.ADMIN_PORT ? Number(env.ADMIN_PORT) : await freePort();
  const child = spawn(process.execPath, [...nodeFlags, bin, role], {
    env: {
      ...process.env,
      ...env,
      PORT: String(port),
      // a port of its own: another process on this machine may hold the default 8081
      ADMIN_PORT: String(adminPort),
      HOST: "127.0.0.1",
      LOG_LEVEL: role === "work" ? "info" : "warn",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr?.on("data", (d) => {
    err += d;
  });
  try {
    if (role === "serve") {
      await waitFor(
        async () => {
          try {
            // /healthz is on the admin listener; the receiver's port answers only the webhook
            return (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).ok;
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
  } catch (e) {
    log(`simmeter ${role} did not start; its stderr:\n${err.slice(-2000)}`);
    child.kill("SIGKILL");
    throw e;
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
  o: { bin?: string; workFlags?: string[] } = {},
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
  const work = await spawnSimmeter("work", env, o.bin, o.workFlags);
  const serve = await spawnSimmeter("serve", { ...env, PORT: String(port) }, o.bin);
  const bodies = signedBodies(
    events,
    perDelivery,
    `http://127.0.0.1:${serve.port}/webhooks/event-streams`,
  );
  const unique = new Set(events.map((e) => (e as { data: { event_sid: string } }).data.event_sid))
    .size;
  const reader = () => new Database(db, { readonly: true, fileMustExist: true });
  // the WAL file's largest size during the run (it is reused, never shrunk, while the worker runs)
  let peakWal = 0;
  const walSampler = setInterval(() => {
    try {
      peakWal = Math.max(peakWal, statSync(`${db}-wal`).size);
    } catch {}
  }, 100);
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
  clearInterval(walSampler);
  // BullMQ numbers jobs from the queue's id counter: how many jobs the deliveries made
  const counter = new Redis(redisUrl);
  const jobs = Number(await counter.get(`${env.REDIS_PREFIX}:ingest:id`));
  counter.disconnect();
  const r = {
    deliveries: bodies.length,
    jobs,
    events: events.length,
    ackSeconds: (acked - t0) / 1000,
    endToEndSeconds: (done - t0) / 1000,
    eventsPerSecond: Math.round(events.length / ((done - t0) / 1000)),
    deliveriesAckedPerSecond: c.requestsPerSec,
    non2xx: c.non2xx,
    errors: c.errors,
    peakRssServeMb: peakRssMb(serve.child.pid),
    peakRssWorkMb: peakRssMb(work.child.pid),
    peakWalMb: Math.round(peakWal / 1_048_576),
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
  const emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
  const stripe = createStripe({
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    STRIPE_TIMEOUT_MS: 10_000,
  });
  await ensureMeter(stripe, "supersim_data_bytes");
  const db = openDb(join(WORK, "stripe.db"));
  const ledger = sqliteLedger(db);
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
    await assignCustomer({
      ledger,
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
    await runReport({ ledger, stripe, redis, logger, settings, now: () => clock.now });
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

// ---------------------------------------------------------------------------------------------
// Planning never blocks receiving: ack latency while the reporter plans a large backlog.
// ---------------------------------------------------------------------------------------------

const PLAN = {
  hours: 3000,
  sims: 300,
  customers: 30,
  outboxRows: 160_000,
  /** every this many customer-hours, the outbox is 1,000 bytes short: the planner writes a row */
  staleEvery: 100,
  rate: 1000,
  connections: 50,
  reportIntervalSeconds: 2,
};

/**
 * The backlog, built directly with the real migrations: SIMS × HOURS usage rows, each SIM
 * assigned to one of CUSTOMERS, and OUTBOX_ROWS sent meter_reports rows that (but for one
 * customer-hour in staleEvery) already cover that usage. Hours older than Stripe's window carry
 * one row per customer-hour (what compactOutbox leaves; so the service's start-up prune has
 * nothing to fold), recent hours several. No hour is dirty yet: the bench marks all HOURS dirty
 * once load runs. The reporter's assignment watermark is current, as after earlier runs.
 */
function buildPlanningBacklog(path: string, now: number) {
  rmSync(path, { force: true });
  const db = openDb(path);
  const c = db.$client;
  const last = hourStart(now) - HOUR_MS;
  const first = last - (PLAN.hours - 1) * HOUR_MS;
  const foldedBefore = hourStart(now - 36 * DAY_MS);
  const sims = Array.from({ length: PLAN.sims }, (_, i) => `HS${i.toString(16).padStart(32, "0")}`);
  const customerOf = (sim: number) => `cus_plan${String(sim % PLAN.customers).padStart(3, "0")}`;
  const hours = Array.from({ length: PLAN.hours }, (_, i) => first + i * HOUR_MS);
  const oldHours = hours.filter((h) => h < foldedBefore).length;
  const oldGroups = oldHours * PLAN.customers;
  const recentGroups = (PLAN.hours - oldHours) * PLAN.customers;
  const perRecent = Math.floor((PLAN.outboxRows - oldGroups) / recentGroups);
  let extra = PLAN.outboxRows - oldGroups - perRecent * recentGroups;
  let outboxRows = 0;
  let stale = 0;
  let group = 0;
  c.transaction(() => {
    const assign = c.prepare(
      "insert into assignments (target_type, target_id, customer_id, effective_from, created_at) values ('sim', ?, ?, ?, ?)",
    );
    sims.forEach((sim, i) => {
      assign.run(sim, customerOf(i), first - DAY_MS, now);
    });
    const usage = c.prepare("insert into usage_hourly (hour, sim_sid, bytes) values (?, ?, ?)");
    const report = c.prepare(
      `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, kind, state, attempts, created_at, sent_at)
       values (?, ?, ?, ?, ?, ?, 0, 'usage', 'sent', 1, ?, ?)`,
    );
    for (const hour of hours) {
      const counted = new Map<string, number>();
      sims.forEach((sim, i) => {
        const bytes = 1_000_000 + (((hour / HOUR_MS) * 31 + i * 17) % 1000) * 1000;
        usage.run(hour, sim, bytes);
        counted.set(customerOf(i), (counted.get(customerOf(i)) ?? 0) + bytes);
      });
      for (const [customer, bytes] of counted) {
        const isStale = group++ % PLAN.staleEvery === 0;
        if (isStale) stale++;
        const total = isStale ? bytes - 1000 : bytes;
        let parts = hour < foldedBefore ? 1 : perRecent;
        if (hour >= foldedBefore && extra > 0) {
          parts++;
          extra--;
        }
        const part = Math.floor(total / parts);
        for (let seq = 0; seq < parts; seq++) {
          const value = seq === parts - 1 ? total - part * (parts - 1) : part;
          const sentAt = hour + HOUR_MS + seq * 300_000;
          report.run(
            meterEventIdentifier(customer, hour, seq),
            customer,
            hour,
            seq,
            value,
            Math.floor(hour / 1000),
            sentAt,
            sentAt,
          );
          outboxRows++;
        }
      }
    }
    const maxId = (c.prepare("select max(id) as id from assignments").get() as { id: number }).id;
    c.prepare(
      "insert into meta (key, value) values ('report_assignment_id', ?) on conflict(key) do update set value = excluded.value",
    ).run(maxId);
  })();
  c.pragma("wal_checkpoint(TRUNCATE)");
  c.close();
  return {
    hours,
    first,
    last,
    usageRows: PLAN.hours * PLAN.sims,
    outboxRows,
    staleCustomerHours: stale,
  };
}

/**
 * The previous `simmeter start`: receiver, ingest worker and reporter on one thread (src/cli/run.ts
 * before the worker thread), from the same compiled modules. Only this bench runs it, for the
 * comparison; the service itself has no such switch.
 */
const ONE_THREAD_START = `
import { cliContext } from ${JSON.stringify(new URL("../dist/cli/context.js", import.meta.url).href)};
import { createMetrics } from ${JSON.stringify(new URL("../dist/lib/metrics.js", import.meta.url).href)};
import { closeAll, onSignals } from ${JSON.stringify(new URL("../dist/lib/shutdown.js", import.meta.url).href)};
import { startServer } from ${JSON.stringify(new URL("../dist/runtime/server.js", import.meta.url).href)};
import { startWorker } from ${JSON.stringify(new URL("../dist/runtime/worker.js", import.meta.url).href)};
const { config, logger, db } = cliContext({ receiver: true });
const metrics = createMetrics();
const closers = [...(await startServer(config, db, logger, metrics)).closers];
closers.push(...(await startWorker(config, db, logger, metrics)).closers);
closers.push({ name: "sqlite", close: () => void db.$client.close() });
onSignals(async () => {
  const clean = await closeAll(closers, config.SHUTDOWN_TIMEOUT_MS, logger);
  logger.flush();
  process.exit(clean ? 0 : 1);
});
`;

type Arrangement = "worker-thread" | "one-thread";

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0;
}

async function planningUnderLoad(
  redisUrl: string,
  baseDb: string,
  backlog: ReturnType<typeof buildPlanningBacklog>,
  arrangement: Arrangement,
  seconds: { warmup: number; maxPlanning: number; idleWindow: number },
  plan: boolean,
) {
  const name = `${arrangement}${plan ? "" : "-idle"}`;
  const db = join(WORK, `planning-${name}.db`);
  for (const ext of ["", "-wal", "-shm"]) rmSync(`${db}${ext}`, { force: true });
  copyFileSync(baseDb, db);
  const emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
  const stripe = createStripe({
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    STRIPE_TIMEOUT_MS: 10_000,
  });
  await ensureMeter(stripe, "supersim_data_bytes");
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}/webhooks/event-streams`;
  // The compiled entry itself, not bin/simmeter.mjs: an edit to src/ during the bench would make
  // bin fall back to the TypeScript sources for later runs, and the two arrangements would differ.
  const argv =
    arrangement === "worker-thread"
      ? [join(ROOT, "dist/cli/main.js"), "start"]
      : ["--input-type=module", "-e", ONE_THREAD_START];
  const idleBefore = await quietMachine();
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      REDIS_URL: redisUrl,
      REDIS_PREFIX: `benchplan${name.replaceAll("-", "")}`,
      DATABASE_PATH: db,
      TWILIO_AUTH_TOKEN: TOKEN,
      PUBLIC_URL: publicUrl,
      STRIPE_SECRET_KEY: emu.apiKey,
      STRIPE_API_BASE: emu.url,
      REPORT_INTERVAL_SECONDS: String(PLAN.reportIntervalSeconds),
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr?.on("data", (d) => {
    err += d;
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`simmeter exited (${child.exitCode}):\n${err}`);
      if (!err.includes("ingest worker running")) return false;
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
      } catch {
        return false;
      }
    },
    `simmeter start (${arrangement})`,
    60_000,
    100,
  );

  const events = fleetEvents(PLAN.rate * (seconds.warmup + seconds.maxPlanning + 30), 4242);
  const bodies = signedBodies(events, 1, publicUrl);
  const acks: { at: number; ms: number; ok: boolean }[] = [];
  let i = 0;
  let cannonDone: (r: autocannon.Result) => void = () => {};
  const cannonResult = new Promise<autocannon.Result>((r) => {
    cannonDone = r;
  });
  const inst = autocannon(
    {
      url: `http://127.0.0.1:${port}`,
      connections: PLAN.connections,
      overallRate: PLAN.rate,
      duration: seconds.warmup + seconds.maxPlanning + 30,
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
    },
    (e, r) => {
      if (e) log(`autocannon: ${e}`);
      cannonDone(r);
    },
  );
  inst.on("response", (_client, status, _bytes, ms) => {
    acks.push({ at: Date.now(), ms, ok: status >= 200 && status < 300 });
  });
  // /healthz, one request at a time, as a supervisor's probe would.
  const health: { at: number; ms: number }[] = [];
  let probing = true;
  const probe = (async () => {
    while (probing) {
      const t = performance.now();
      try {
        await fetch(`http://127.0.0.1:${port}/healthz`);
      } catch {}
      health.push({ at: Date.now(), ms: performance.now() - t });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();

  await new Promise((r) => setTimeout(r, seconds.warmup * 1000));
  const cpuAtStart = await cpuSnapshot(redisUrl, child.pid);
  // The trigger: every backlog hour becomes dirty (a few ms; the next report tick plans them).
  // Without it (the baseline) the same load runs for idleWindow seconds with nothing to plan.
  if (plan) {
    const writer = new Database(db, { timeout: 5000 });
    const mark = writer.prepare(
      "insert into report_dirty_hours (hour) values (?) on conflict do nothing",
    );
    writer.transaction(() => {
      for (const h of backlog.hours) mark.run(h);
    })();
    writer.close();
  }
  const triggeredAt = Date.now();
  const reader = new Database(db, { readonly: true, fileMustExist: true });
  const left = reader.prepare<[number], { n: number }>(
    "select count(*) as n from report_dirty_hours where hour <= ?",
  );
  let planningFrom = 0;
  let planningTo = 0;
  const deadline = triggeredAt + (plan ? seconds.maxPlanning : seconds.idleWindow) * 1000;
  while (plan && Date.now() < deadline) {
    const n = left.get(backlog.last)?.n ?? 0;
    if (!planningFrom && n < backlog.hours.length) planningFrom = Date.now();
    if (n === 0) {
      planningTo = Date.now();
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!plan) await new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())));
  const cpu = cpuShares(cpuAtStart, await cpuSnapshot(redisUrl, child.pid));
  reader.close();
  inst.stop();
  const cannon = await cannonResult;
  probing = false;
  await probe;
  // The run's summary (planned rows, Stripe calls) once its rows went out.
  let summary: Record<string, unknown> | null = null;
  if (plan)
    try {
      await waitFor(
        () => {
          for (const line of err.split("\n")) {
            if (!line.includes('"report run finished"')) continue;
            const s = JSON.parse(line) as Record<string, unknown>;
            if (Number(s.planned) >= backlog.staleCustomerHours) summary = s;
          }
          return summary !== null;
        },
        "the backlog's report run",
        300_000,
        500,
      );
    } catch (e) {
      log(`planning ${arrangement}: ${(e as Error).message}`);
    }
  const peakRss = peakRssMb(child.pid);
  child.kill("SIGTERM");
  const exitCode = await exited;
  await emu.close();

  const from = planningFrom || triggeredAt;
  const to = planningTo || Date.now();
  const inWindow = acks.filter((a) => a.at >= from && a.at <= to);
  const ms = inWindow.map((a) => a.ms).sort((a, b) => a - b);
  const healthMs = health.filter((h) => h.at >= from && h.at <= to).map((h) => h.ms);
  const r = {
    arrangement,
    plan,
    idleBeforePercent: Math.round(idleBefore * 100),
    /** shares of the whole machine (all cores) during the window, in % */
    cpuPercent: cpu,
    windowSeconds: (to - from) / 1000,
    planningSeconds: planningTo ? (planningTo - planningFrom) / 1000 : null,
    triggerToPlannedSeconds: planningTo ? (planningTo - triggeredAt) / 1000 : null,
    plannedRows: summary ? Number((summary as Record<string, unknown>).planned) : null,
    stripeCalls: summary ? Number((summary as Record<string, unknown>).calls) : null,
    acksInWindow: inWindow.length,
    ackRatePerSecond: Math.round(inWindow.length / ((to - from) / 1000)),
    ackP50Ms: quantile(ms, 0.5),
    ackP99Ms: quantile(ms, 0.99),
    ackMaxMs: ms.at(-1) ?? 0,
    non2xxInWindow: inWindow.filter((a) => !a.ok).length,
    healthzMaxMs: Math.round(Math.max(0, ...healthMs)),
    wholeRun: {
      p50Ms: cannon.latency.p50,
      p99Ms: cannon.latency.p99,
      maxMs: cannon.latency.max,
      non2xx: cannon.non2xx,
      errors: cannon.errors,
    },
    peakRssMb: peakRss,
    exitCode,
  };
  log(`planning ${name}: ${JSON.stringify(r)}`);
  return r;
}

/**
 * Waits (up to 3 min) for the shared machine to be quiet, ≥ 85 % idle over 2 s, so runs start
 * alike; returns the idle share last seen.
 */
async function quietMachine(): Promise<number> {
  const until = Date.now() + 180_000;
  let idle = await cpuIdleShare(2000);
  while (idle < 0.85 && Date.now() < until) idle = await cpuIdleShare(2000);
  return idle;
}

type CpuSnapshot = { machineBusy: number; machineTotal: number; ours: number };
const CLK_TCK = 100;

/** CPU seconds: the machine's busy and total time (all cores), and this bench's processes'. */
async function cpuSnapshot(
  redisUrl: string,
  simmeterPid: number | undefined,
): Promise<CpuSnapshot> {
  const v = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const total = v.reduce((a, b) => a + b, 0) / CLK_TCK;
  const idle = ((v[3] ?? 0) + (v[4] ?? 0)) / CLK_TCK;
  let simmeter = 0;
  try {
    const stat = readFileSync(`/proc/${simmeterPid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    simmeter = (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {}
  let redis = 0;
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    const info = await client.info("cpu");
    const num = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
    redis = num("used_cpu_sys") + num("used_cpu_user");
  } catch {
  } finally {
    client.disconnect();
  }
  const self = process.cpuUsage();
  return {
    machineBusy: total - idle,
    machineTotal: total,
    ours: simmeter + redis + (self.user + self.system) / 1e6,
  };
}

/** Shares of the machine between two snapshots: simmeter + Redis + this bench, and the rest. */
function cpuShares(a: CpuSnapshot, b: CpuSnapshot) {
  const total = b.machineTotal - a.machineTotal;
  if (total <= 0) return { busy: 0, benchAndSimmeter: 0, others: 0 };
  const busy = (b.machineBusy - a.machineBusy) / total;
  const ours = (b.ours - a.ours) / total;
  return {
    busy: Math.round(busy * 100),
    benchAndSimmeter: Math.round(ours * 100),
    others: Math.max(0, Math.round((busy - ours) * 100)),
  };
}

/** Share of the machine's CPU time that was idle over `ms` (/proc/stat; 1 where unknown). */
async function cpuIdleShare(ms: number): Promise<number> {
  const read = () => {
    try {
      const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/);
      const v = f.slice(1).map(Number);
      return { idle: (v[3] ?? 0) + (v[4] ?? 0), total: v.reduce((a, b) => a + b, 0) };
    } catch {
      return null;
    }
  };
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  if (!a || !b || b.total === a.total) return 1;
  return (b.idle - a.idle) / (b.total - a.total);
}

async function planningBench(redisUrl: string) {
  const base = join(WORK, "planning-base.db");
  const t0 = Date.now();
  const backlog = buildPlanningBacklog(base, Date.now());
  log(
    `planning backlog: ${n(backlog.usageRows)} usage rows, ${n(backlog.outboxRows)} outbox rows in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
  const seconds = { warmup: 3, maxPlanning: QUICK ? 60 : 300, idleWindow: QUICK ? 10 : 20 };
  // p99 on this shared machine swings from run to run: each configuration runs `rounds` times,
  // interleaved, and the table shows the run with the median p99 next to every run's p99.
  const rounds = QUICK ? 1 : 3;
  const all: Awaited<ReturnType<typeof planningUnderLoad>>[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const a of ["worker-thread", "one-thread"] as const) {
      all.push(await planningUnderLoad(redisUrl, base, backlog, a, seconds, true));
      all.push(await planningUnderLoad(redisUrl, base, backlog, a, seconds, false));
    }
  }
  const runs = [];
  for (const a of ["worker-thread", "one-thread"] as const) {
    for (const plan of [true, false]) {
      const same = all.filter((r) => r.arrangement === a && r.plan === plan);
      const byP99 = [...same].sort((x, y) => x.ackP99Ms - y.ackP99Ms);
      const median = byP99[Math.floor((byP99.length - 1) / 2)] as (typeof all)[number];
      runs.push({
        ...median,
        allP99Ms: same.map((r) => Math.round(r.ackP99Ms)),
        allOthersCpu: same.map((r) => r.cpuPercent.others),
        allPlanningSeconds: same.map((r) => r.planningSeconds),
      });
    }
  }
  let date = "";
  try {
    date = execFileSync("date", { encoding: "utf8" }).trim();
  } catch {}
  return {
    date: new Date().toISOString(),
    dateCommand: date,
    backlog: {
      hours: PLAN.hours,
      sims: PLAN.sims,
      customers: PLAN.customers,
      usageRows: backlog.usageRows,
      outboxRows: backlog.outboxRows,
      staleCustomerHours: backlog.staleCustomerHours,
    },
    rate: PLAN.rate,
    connections: PLAN.connections,
    rounds,
    runs,
    all,
  };
}

type PlanningResults = Awaited<ReturnType<typeof planningBench>>;

const PLANNING_HEADING = "## Planning never blocks receiving";

function renderPlanning(
  p: PlanningResults,
  m: ReturnType<typeof machine>,
  command: string,
): string {
  const label = (r: PlanningResults["runs"][number]) =>
    `${r.arrangement === "worker-thread" ? "`simmeter start`: worker role in a worker thread" : "one thread (the previous `simmeter start`, rebuilt by the bench)"}${r.plan ? ", planning the backlog" : ", nothing to plan (baseline)"}`;
  const row = (r: PlanningResults["runs"][number]) =>
    `| ${label(r)} | ${r.plan ? `${r.planningSeconds?.toFixed(1) ?? "not finished"} s` : "–"} | ${r.plan ? `${r.plannedRows ?? "?"} / ${r.stripeCalls ?? "?"}` : "–"} | ${n(r.acksInWindow)} in ${r.windowSeconds.toFixed(1)} s (${n(r.ackRatePerSecond)}/s) | ${Math.round(r.ackP50Ms)} / ${Math.round(r.ackP99Ms)} / ${Math.round(r.ackMaxMs)} ms | ${r.healthzMaxMs} ms | ${r.non2xxInWindow} | ${r.peakRssMb} MB | ${r.cpuPercent.benchAndSimmeter} % / ${r.cpuPercent.others} % | ${r.allP99Ms.map((p99, k) => `${p99} ms (${r.allOthersCpu[k]} %)`).join(", ")} |`;
  const split = splitRun(p);
  const ms = (x: number) => `${Math.round(x)} ms`;
  const compare = (a: Arrangement, what: string) => {
    const busy = p.runs.find((r) => r.arrangement === a && r.plan);
    const idle = p.runs.find((r) => r.arrangement === a && !r.plan);
    if (!busy || !idle) return "";
    return `${what}, from nothing to plan to planning: ack p50 ${ms(idle.ackP50Ms)} → ${ms(busy.ackP50Ms)}, p99 ${ms(idle.ackP99Ms)} → ${ms(busy.ackP99Ms)}, max ${ms(idle.ackMaxMs)} → ${ms(busy.ackMaxMs)}, acks ${n(idle.ackRatePerSecond)}/s → ${n(busy.ackRatePerSecond)}/s, /healthz max ${idle.healthzMaxMs} → ${busy.healthzMaxMs} ms.`;
  };
  return `${PLANNING_HEADING}

Measured by \`${command}\` on ${p.dateCommand || p.date} (${p.date}).
Machine: ${m.cpus} × ${m.cpu}, ${m.memGb} GiB, ${m.os}, Node ${m.node}, Redis ${m.redis}. The load generator, the Stripe emulator, Redis and simmeter share these cores, and so do other tenants of this machine: each run starts once the machine was ≥ 85 % idle for 2 s (or after 3 min), and the last column splits the machine's CPU time (both cores = 100 %) during the window into this bench's processes and everything else.

Backlog, built with the real migrations: ${n(p.backlog.usageRows)} usage rows (${n(p.backlog.sims)} SIMs × ${n(p.backlog.hours)} hours, assigned to ${p.backlog.customers} customers), ${n(p.backlog.outboxRows)} sent outbox rows covering that usage except for ${n(p.backlog.staleCustomerHours)} customer-hours (1,000 bytes short each, so the planner writes those rows and the sender sends them). After 3 s of load, all ${n(p.backlog.hours)} hours are marked dirty; the next report tick (\`REPORT_INTERVAL_SECONDS=2\`) plans them, then sends to the Stripe emulator. Load: autocannon, ${n(p.rate)} Twilio-signed 1-event deliveries/s over ${p.connections} connections, and a \`/healthz\` probe (one request at a time, every 100 ms). The latencies are of the acks that completed while planning ran (from the first to the last dirty hour planned, polled every 50 ms); the baselines measure the same load for a fixed window with nothing to plan. Both arrangements run the same compiled code (\`dist/\`). Each configuration ran ${p.rounds} time${p.rounds === 1 ? "" : "s"} (interleaved); a row shows the run with the median p99, the last column every run.

| Arrangement | Planning took | Rows planned / Stripe calls | Acks in the window | Ack p50 / p99 / max | /healthz max | Non-2xx | Peak RSS | Machine CPU in the window: bench + simmeter + Redis / other tenants | Every run's p99 (other tenants' CPU) |
|---|---|---|---|---|---|---|---|---|---|
${p.runs.map(row).join("\n")}

${compare("worker-thread", "With the worker role in a worker thread")}
${compare("one-thread", "On one thread")}

Target: ack p99 ≤ 50 ms at ${n(p.rate)} deliveries/s while the reporter plans: ${split ? mark(split.ackP99Ms <= 50) : "not measured"} (p99 ${split ? Math.round(split.ackP99Ms) : "?"} ms).
At a fixed rate, autocannon sends nothing while all its connections wait, so a stall shows in the max and in a lower ack rate rather than in full in p99. Peak RSS is the whole process (for \`simmeter start\`, both threads).
`;
}

const splitRun = (p: PlanningResults) =>
  p.runs.find((r) => r.arrangement === "worker-thread" && r.plan);
const planningCell = (p: PlanningResults) => {
  const r = splitRun(p);
  return r ? `p50 ${r.ackP50Ms} ms, p99 ${r.ackP99Ms} ms, max ${r.ackMaxMs} ms` : "not measured";
};
const planningMark = (p: PlanningResults) => {
  const r = splitRun(p);
  return r ? mark(r.ackP99Ms <= 50) : "";
};

/** --only planning: replaces (or adds) only this section of the existing BENCHMARKS.md. */
function writePlanningSection(file: string, section: string): void {
  const current = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  const at = current.indexOf(PLANNING_HEADING);
  if (at >= 0) {
    const next = current.indexOf("\n## ", at + PLANNING_HEADING.length);
    writeFileSync(file, `${current.slice(0, at)}${section}${next >= 0 ? current.slice(next) : ""}`);
    return;
  }
  const before = current.indexOf("\n## Where the time goes");
  writeFileSync(
    file,
    before >= 0
      ? `${current.slice(0, before + 1)}${section}\n${current.slice(before + 1)}`
      : `${current.trimEnd()}\n\n${section}`,
  );
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
    if (args.only === "e2e100") {
      await e2e100Rounds(redis.url);
      return;
    }
    if (args.only === "planning") {
      const planning = await planningBench(redis.url);
      writeFileSync(join(WORK, "planning.json"), `${JSON.stringify(planning, null, 2)}\n`);
      const command = `npm run bench -- --only planning${QUICK ? " --quick" : ""}`;
      writePlanningSection(resolve(ROOT, args.out as string), renderPlanning(planning, m, command));
      log(`wrote the planning section of ${args.out} and ${join(WORK, "planning.json")}`);
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
    const planning = await planningBench(redis.url);
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
      planning,
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

/**
 * --only e2e100: yardstick, then each tree's end-to-end run, per round; prints every run and the
 * median ratio per tree (events/s end to end ÷ (yardstick deliveries/s × 100)).
 */
async function e2e100Rounds(redisUrl: string) {
  const trees = (args.trees ?? ROOT).split(",").map((t) => resolve(t));
  for (const t of trees) {
    if (t !== ROOT)
      execFileSync(process.execPath, [join(t, "scripts/build.mjs")], { cwd: t, stdio: "inherit" });
  }
  const rounds = Number(args.rounds);
  const big = fleetEvents(QUICK ? 20_000 : 100_000, 1);
  const runs: {
    tree: string;
    round: number;
    eventsPerSecond: number;
    yardstickEventsPerSecond: number;
    ratio: number;
    peakWalMb: number;
  }[] = [];
  for (let round = 1; round <= rounds; round++) {
    const y = await yardstick(big, 100, 16);
    for (const [i, tree] of trees.entries()) {
      const prof = args["cpu-prof"];
      const workFlags = prof
        ? [
            "--cpu-prof",
            `--cpu-prof-dir=${resolve(prof)}`,
            `--cpu-prof-name=work-${i}-${round}.cpuprofile`,
          ]
        : [];
      const r = await endToEnd(redisUrl, `e2e100t${i}r${round}`, big, 100, 16, {
        bin: join(tree, "bin/simmeter.mjs"),
        workFlags,
      });
      const ratio = r.eventsPerSecond / (y.deliveriesPerSecond * 100);
      runs.push({
        tree,
        round,
        eventsPerSecond: r.eventsPerSecond,
        yardstickEventsPerSecond: Math.round(y.deliveriesPerSecond * 100),
        ratio,
        peakWalMb: r.peakWalMb,
      });
      log(
        `round ${round} ${tree}: ${n(r.eventsPerSecond)} events/s, yardstick ${n(y.deliveriesPerSecond)} deliveries/s, ratio ${ratio.toFixed(3)}, peak WAL ${r.peakWalMb} MB`,
      );
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  for (const tree of trees) {
    const mine = runs.filter((r) => r.tree === tree);
    log(
      `${tree}: ratio median ${median(mine.map((r) => r.ratio)).toFixed(3)} (${mine.map((r) => r.ratio.toFixed(3)).join(", ")}), events/s median ${n(median(mine.map((r) => r.eventsPerSecond)))}`,
    );
  }
  writeFileSync(join(WORK, "e2e100.json"), `${JSON.stringify(runs, null, 2)}\n`);
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
  planning: PlanningResults;
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
| Receiver ack latency at ${n(r.planning.rate)} deliveries/s while \`simmeter start\` plans ${n(r.planning.backlog.outboxRows)} outbox rows and ${n(r.planning.backlog.hours)} dirty hours (see "Planning never blocks receiving") | ${planningCell(r.planning)} | p99 ≤ 50 ms | ${planningMark(r.planning)} |
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

${renderPlanning(r.planning, r.machine, r.command)}
${readFileSync(join(ROOT, "docs/benchmark-analysis.md"), "utf8")}`;
}

await main();
