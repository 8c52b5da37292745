// End to end on PostgreSQL: 1 `simmeter serve` + N `simmeter work` (N in --workers, default
// 1,2,4), all on one database of a private cluster with PostgreSQL's durable defaults (fsync and
// synchronous_commit on: startPostgres({ settings: "production" })) and a private Redis,
// 100-event Twilio-signed deliveries from autocannon (16 connections), as scripts/bench.ts's
// endToEnd does for SQLite; the bare Express yardstick in the same run for the ratio.
//
//   npx tsx scripts/bench-pg.ts [--quick] [--workers 1,2,4] [--events 100000] [--out DIR]
//
// Per run: events/s end to end (first request sent → every distinct event committed: the last
// commit of a seen_events row), the acknowledgement rate, receive → commit lag (p50/p99/max of
// every event: seen_events.received_at, stamped by the receiver, against the commit time of the
// transaction that inserted the row, pg_xact_commit_timestamp(xmin); the cluster runs with
// track_commit_timestamp on for that, its only departure from the defaults), peak RSS per
// process (VmHWM). Prints a table and writes results.json into a new temp dir (or --out).
//
// simmeter_ingest_lag_seconds (the workers' /metrics) measures event time → counted; the
// simulated events here span the 6 hours before the run, so it measures the simulation's age, not
// simmeter: it is recorded in the JSON (p99 bucket) for completeness only.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { Redis } from "ioredis";
import pg from "pg";
import { migratePg } from "../src/db/pg/client.ts";
import { signTwilio } from "../src/receive/twilio-signature.ts";
import { simulateFleet } from "../src/simulate/fleet.ts";
import { startPostgres, withDatabase } from "./lib/postgres-server.ts";
import { freePort, startRedis } from "./lib/redis-server.ts";
import { waitFor } from "./lib/wait.ts";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    workers: { type: "string", default: "1,2,4" },
    events: { type: "string" },
    out: { type: "string" },
    connections: { type: "string", default: "16" },
  },
});
const QUICK = args.quick;
const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin/simmeter.mjs");
const TOKEN = "bench-token-0123456789abcdef0123";
const PER_DELIVERY = 100;
const CONNECTIONS = Number(args.connections);
const N_EVENTS = Number(args.events ?? (QUICK ? 20_000 : 100_000));
const WORKER_COUNTS = (args.workers as string).split(",").map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--workers: ${s} is not a worker count`);
  return n;
});
const OUT = args.out ? resolve(args.out) : mkdtempSync(join(os.tmpdir(), "simmeter-bench-pg-"));
mkdirSync(OUT, { recursive: true });
const COMMAND = `npx tsx scripts/bench-pg.ts${QUICK ? " --quick" : ""} --workers ${WORKER_COUNTS.join(",")}${args.events ? ` --events ${args.events}` : ""}${args.connections !== "16" ? ` --connections ${args.connections}` : ""}`;
const log = (m: string) => process.stderr.write(`[bench-pg] ${m}\n`);

// Measure what `npm install` produces: the compiled build.
execFileSync(process.execPath, [join(ROOT, "scripts/build.mjs")], { cwd: ROOT, stdio: "inherit" });

// ---- small helpers, copied from scripts/bench.ts (it exports none) ----------------------------

type Proc = { child: ChildProcess; port: number; adminPort: number; stop: () => Promise<void> };

/** A memory figure of a live process from /proc, in MB: VmHWM is the peak. */
function peakRssMb(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}

async function spawnSimmeter(role: "serve" | "work", env: Record<string, string>): Promise<Proc> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  const adminPort = await freePort();
  const child = spawn(process.execPath, [BIN, role], {
    env: {
      ...process.env,
      ...env,
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      HOST: "127.0.0.1",
      LOG_LEVEL: role === "work" ? "info" : "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
    if (out.length > 200_000) out = out.slice(-100_000);
  });
  child.stderr?.on("data", (d) => {
    out += d;
    if (out.length > 200_000) out = out.slice(-100_000);
  });
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}`);
        if (role === "work") return out.includes("ingest worker running");
        try {
          return (await fetch(`http://127.0.0.1:${adminPort}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      `simmeter ${role}`,
      60_000,
      50,
    );
  } catch (e) {
    log(`simmeter ${role} did not start; its output:\n${out.slice(-3000)}`);
    child.kill("SIGKILL");
    throw e;
  }
  return {
    child,
    port,
    adminPort,
    stop: () =>
      new Promise<void>((r) => {
        if (child.exitCode !== null || child.signalCode !== null) return r();
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
    { env: { ...process.env, PORT: String(port) }, stdio: ["ignore", "pipe", "inherit"] },
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
    adminPort: 0,
    stop: () =>
      new Promise<void>((r) => {
        if (child.exitCode !== null) return r();
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

async function cannon(port: number, bodies: Body[], connections: number): Promise<Cannon> {
  let i = 0;
  const started = Date.now();
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections,
    amount: bodies.length,
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

/** The simulator's events of the 6 hours before now, from 4,000-SIM fleets (scripts/bench.ts). */
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

// ---- the measurements --------------------------------------------------------------------------

async function yardstick(events: unknown[]) {
  const y = await spawnYardstick();
  const bodies = signedBodies(
    events,
    PER_DELIVERY,
    `http://127.0.0.1:${y.port}/webhooks/event-streams`,
  );
  const c = await cannon(y.port, bodies, CONNECTIONS);
  const rss = peakRssMb(y.child.pid);
  await y.stop();
  const r = {
    deliveriesPerSecond: c.requestsPerSec,
    eventsPerSecond: c.requestsPerSec * PER_DELIVERY,
    p99Ms: c.p99,
    non2xx: c.non2xx,
    peakRssMb: rss,
  };
  log(`yardstick: ${JSON.stringify(r)}`);
  return r;
}

/** p99 bucket (upper bound, s) of a Prometheus histogram summed over processes */
function histogramQuantile(texts: string[], name: string, q: number): number | null {
  const buckets = new Map<number, number>();
  for (const t of texts) {
    for (const m of t.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)`, "gm"))) {
      const le = m[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(m[1]);
      buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
    }
  }
  const sorted = [...buckets.entries()].sort(([a], [b]) => a - b);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total === 0) return null;
  return sorted.find(([, n]) => n >= q * total)?.[0] ?? null;
}

async function endToEnd(
  o: { redisUrl: string; admin: pg.Client; clusterUrl: string; template: string },
  workers: number,
  events: unknown[],
) {
  const name = `bench_e2e_w${workers}`;
  await o.admin.query(`create database ${name} template ${o.template}`);
  const url = withDatabase(o.clusterUrl, name);
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}/webhooks/event-streams`;
  const prefix = `benchpg${workers}`;
  const env = {
    REDIS_URL: o.redisUrl,
    REDIS_PREFIX: prefix,
    DATABASE_URL: url,
    DATABASE_PATH: "",
    TWILIO_AUTH_TOKEN: TOKEN,
    PUBLIC_URL: publicUrl,
    RETENTION_DAYS: "100000",
  };
  const works: Proc[] = [];
  for (let i = 0; i < workers; i++) works.push(await spawnSimmeter("work", env));
  const serve = await spawnSimmeter("serve", { ...env, PORT: String(port) });
  const reader = new pg.Client({ connectionString: url, application_name: "bench-pg-reader" });
  await reader.connect();
  try {
    const bodies = signedBodies(events, PER_DELIVERY, publicUrl);
    const unique = new Set(events.map((e) => (e as { data: { event_sid: string } }).data.event_sid))
      .size;
    const t0 = Date.now();
    const c = await cannon(serve.port, bodies, CONNECTIONS);
    const acked = Date.now();
    let counted = 0;
    await waitFor(
      async () => {
        counted = Number(
          (await reader.query("select count(*) as n from seen_events")).rows[0]?.n ?? 0,
        );
        return counted >= unique;
      },
      `${workers} workers: all ${unique} events counted`,
      900_000,
      200,
    );
    const polled = Date.now();
    // Every event's receive → commit time, exact: the receiver's stamp against the commit time of
    // the transaction that inserted its dedupe record (track_commit_timestamp = on).
    const lag = (
      await reader.query(
        `with l as (
           select extract(epoch from pg_xact_commit_timestamp(xmin)) * 1000 as committed_ms,
                  received_at
             from seen_events)
         select max(committed_ms) as last_commit_ms,
                percentile_cont(0.5) within group (order by committed_ms - received_at) as p50,
                percentile_cont(0.99) within group (order by committed_ms - received_at) as p99,
                max(committed_ms - received_at) as max
           from l`,
      )
    ).rows[0] as { last_commit_ms: string; p50: number; p99: number; max: string };
    const done = Number(lag.last_commit_ms);
    const metrics = await Promise.all(
      works.map(async (w) => {
        try {
          return await (await fetch(`http://127.0.0.1:${w.adminPort}/metrics`)).text();
        } catch {
          return "";
        }
      }),
    );
    const counter = new Redis(o.redisUrl);
    const jobs = Number(await counter.get(`${prefix}:ingest:id`));
    counter.disconnect();
    const r = {
      workers,
      deliveries: bodies.length,
      jobs,
      events: events.length,
      distinctEvents: unique,
      ackSeconds: (acked - t0) / 1000,
      endToEndSeconds: (done - t0) / 1000,
      /** when the poller saw the last event (≤ 200 ms + a count after the last commit) */
      polledSeconds: (polled - t0) / 1000,
      eventsPerSecond: Math.round(unique / ((done - t0) / 1000)),
      deliveriesAckedPerSecond: c.requestsPerSec,
      ackP99Ms: c.p99,
      non2xx: c.non2xx,
      errors: c.errors,
      receiveToCommitMs: {
        p50: Math.round(Number(lag.p50)),
        p99: Math.round(Number(lag.p99)),
        max: Math.round(Number(lag.max)),
      },
      /** simmeter_ingest_lag_seconds p99 bucket: event time → counted, the simulation's age */
      eventTimeLagP99BucketSeconds: histogramQuantile(metrics, "simmeter_ingest_lag_seconds", 0.99),
      peakRssServeMb: peakRssMb(serve.child.pid),
      peakRssWorkMb: works.map((w) => peakRssMb(w.child.pid)),
    };
    log(`${workers} workers: ${JSON.stringify(r)}`);
    return r;
  } finally {
    await reader.end();
    await serve.stop();
    await Promise.all(works.map((w) => w.stop()));
  }
}

function machine() {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? "?",
    memGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
  };
}

async function main() {
  const redis = await startRedis();
  const server = await startPostgres({ settings: "production" });
  try {
    // The commit time of every row, for the receive → commit lag: a server restart to apply.
    const su = new pg.Client({ connectionString: server.url });
    await su.connect();
    await su.query("alter system set track_commit_timestamp = on");
    await su.end();
    await server.halt();
    await server.start();
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    const settings = Object.fromEntries(
      (
        await admin.query(
          "select name, setting from pg_settings where name in ('fsync','synchronous_commit','full_page_writes','track_commit_timestamp','shared_buffers','max_connections','server_version')",
        )
      ).rows.map((r: { name: string; setting: string }) => [r.name, r.setting]),
    );
    const template = "bench_template";
    await admin.query(`create database ${template}`);
    await migratePg(withDatabase(server.url, template));
    const m = { ...machine(), postgres: settings, postgresBin: server.bin };
    log(`machine: ${JSON.stringify(m)}`);
    log(`${N_EVENTS} events in ${PER_DELIVERY}-event deliveries, ${CONNECTIONS} connections`);

    const events = fleetEvents(N_EVENTS, 1);
    const y = await yardstick(events);
    const runs = [];
    for (const n of WORKER_COUNTS) {
      runs.push(
        await endToEnd({ redisUrl: redis.url, admin, clusterUrl: server.url, template }, n, events),
      );
    }
    await admin.end();

    const results = {
      date: new Date().toISOString(),
      command: COMMAND,
      machine: m,
      events: N_EVENTS,
      perDelivery: PER_DELIVERY,
      connections: CONNECTIONS,
      yardstick: y,
      runs,
    };
    const file = join(OUT, "results.json");
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);

    const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
    const header = [
      "workers",
      "events",
      "ack s",
      "end-to-end s",
      "events/s",
      "÷ yardstick",
      "deliveries/s acked",
      "lag p50 / p99 / max ms",
      "peak RSS serve / work MB",
      "non-2xx",
    ];
    const rows = runs.map((r) => [
      String(r.workers),
      fmt(r.events),
      r.ackSeconds.toFixed(1),
      r.endToEndSeconds.toFixed(1),
      fmt(r.eventsPerSecond),
      (r.eventsPerSecond / y.eventsPerSecond).toFixed(3),
      fmt(r.deliveriesAckedPerSecond),
      `${fmt(r.receiveToCommitMs.p50)} / ${fmt(r.receiveToCommitMs.p99)} / ${fmt(r.receiveToCommitMs.max)}`,
      `${r.peakRssServeMb} / ${r.peakRssWorkMb.join(", ")}`,
      String(r.non2xx + r.errors),
    ]);
    const table = [
      `| ${header.join(" | ")} |`,
      `|${header.map(() => "---").join("|")}|`,
      ...rows.map((r) => `| ${r.join(" | ")} |`),
    ].join("\n");
    console.log(
      [
        "",
        `PostgreSQL end to end: 1 serve + N work, ${fmt(N_EVENTS)} events in ${PER_DELIVERY}-event deliveries, ${CONNECTIONS} connections`,
        `PostgreSQL ${settings.server_version} (fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}, full_page_writes=${settings.full_page_writes}, track_commit_timestamp=${settings.track_commit_timestamp}); ${m.cpus} × ${m.cpuModel}, node ${m.node}`,
        `yardstick (bare Express): ${fmt(y.deliveriesPerSecond)} deliveries/s = ${fmt(y.eventsPerSecond)} events/s, peak RSS ${y.peakRssMb} MB`,
        "",
        table,
        "",
        "end-to-end: first request sent → the last seen_events row committed; lag: receive (the receiver's stamp) → commit, over every event",
        `command: ${COMMAND}`,
        `results: ${file}`,
      ].join("\n"),
    );
  } finally {
    await server.stop();
    await redis.stop();
  }
}

await main();
