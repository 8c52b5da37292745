// The zero-config demo (`npm run demo`): a private Redis, an in-process Stripe emulator and the real
// `simmeter start` process; a simulated fleet goes through the signed webhook, and the demo checks
// that what was counted, what Stripe holds and what the simulator says was used all agree.
// Needs only Node and redis-server (or REDIS_URL).

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { Redis as RedisClient } from "ioredis";
import type { ParityRow } from "../src/billing/parity.ts";
import { envSchema } from "../src/config.ts";
import { importCustomersCsv } from "../src/customers/customers.ts";
import { openDb } from "../src/db/client.ts";
import { sqliteLedger } from "../src/ledger/sqlite/index.ts";
import type { DriftRow } from "../src/reporting/reconcile.ts";
import { simulateFleet } from "../src/simulate/fleet.ts";
import { type SendProgress, sendDeliveries, writeCustomersCsv } from "../src/simulate/output.ts";
import { freePort } from "./lib/redis-server.ts";
import { waitFor } from "./lib/wait.ts";
import { type StripeEmulator, startStripeEmulator } from "./stripe-emulator.ts";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin", "simmeter.mjs");
const DATA = join(ROOT, "data");
const HOUR_MS = 3_600_000;
const WEBHOOK_PATH = "/webhooks/event-streams";

const USAGE = `usage: npm run demo -- [--sims N] [--customers N] [--hours H] [--seed S] [--serve]

Runs simmeter end to end on this machine: a private redis-server (or REDIS_URL), an in-process
Stripe emulator, and \`simmeter start\`; drives a simulated fleet through the signed webhook and
checks counted usage against Stripe and against the simulator's ground truth.

  --sims N        SIMs in the fleet (default 40)
  --customers N   Stripe customers they belong to (default 5)
  --hours H       hours of activity, ending now (default 6, at most 720)
  --seed S        simulator seed (default 42)
  --serve         afterwards, keep simmeter, Stripe and Redis running and print the operator
                  console's URL (http://127.0.0.1:<port>/console) until Ctrl-C. The console is
                  loopback-only without ADMIN_TOKEN; set ADMIN_TOKEN (24+ characters) to try its
                  login form
`;

type Flags = { sims: number; customers: number; hours: number; seed: number; serve: boolean };

function parseFlags(): Flags {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      options: {
        sims: { type: "string", default: "40" },
        customers: { type: "string", default: "5" },
        hours: { type: "string", default: "6" },
        seed: { type: "string", default: "42" },
        serve: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name: string, min: number, max: number): number => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min || n > max) {
      process.stderr.write(`demo: --${name} must be an integer from ${min} to ${max}\n`);
      process.exit(2);
    }
    return n;
  };
  const hours = Number(values.hours);
  // Beyond 30 days Stripe's 35-day backdating limit and the dedupe retention start to matter,
  // which is not what this demo is about.
  if (!Number.isFinite(hours) || hours <= 0 || hours > 720) {
    process.stderr.write("demo: --hours must be a number > 0 and at most 720\n");
    process.exit(2);
  }
  return {
    sims: int("sims", 1, 1_000_000),
    customers: int("customers", 1, 10_000),
    hours,
    seed: int("seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
    serve: values.serve === true,
  };
}

// ---------------------------------------------------------------------------------------------
// Output: a progress line on stderr that other output must not tear.

const tty = Boolean(process.stderr.isTTY);
let progressShown = false;

function clearProgress(): void {
  if (tty && progressShown) process.stderr.write("\r\x1b[2K");
  progressShown = false;
}

function say(line = ""): void {
  clearProgress();
  process.stdout.write(`${line}\n`);
}

function warn(line: string): void {
  clearProgress();
  process.stderr.write(`${line}\n`);
}

function showProgress(line: string): void {
  if (tty) {
    // Cut to the terminal width so the line never wraps (a wrapped line cannot be redrawn).
    const width = process.stderr.columns || 120;
    process.stderr.write(`\r\x1b[2K${line.slice(0, Math.max(10, width - 1))}`);
    progressShown = true;
  } else {
    process.stderr.write(`${line}\n`);
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

// ---------------------------------------------------------------------------------------------
// Child processes. Every child runs in its own process group (detached) so that Ctrl-C reaches
// only this script, which then stops them in order; simmeter treats a second signal as "exit
// now", so letting the terminal's SIGINT hit it before our SIGTERM would skip its clean shutdown.

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

async function stopChild(c: ChildProcess, timeoutMs = 15_000): Promise<void> {
  if (!alive(c)) return;
  const exited = new Promise<void>((r) => c.once("exit", () => r()));
  c.kill("SIGTERM");
  const timer = setTimeout(() => {
    if (alive(c)) c.kill("SIGKILL");
  }, timeoutMs);
  await exited;
  clearTimeout(timer);
}

// Last resort when the script dies some other way: detached children would otherwise outlive it.
process.on("exit", () => {
  for (const c of children) if (alive(c)) c.kill("SIGKILL");
});

async function canConnect(host: string, port: number): Promise<boolean> {
  return await new Promise<boolean>((r) => {
    const s = net.connect(port, host);
    s.setTimeout(1000);
    s.once("connect", () => {
      s.destroy();
      r(true);
    });
    s.once("timeout", () => {
      s.destroy();
      r(false);
    });
    s.once("error", () => r(false));
  });
}

/** Runs `simmeter ARGS` without blocking this process: the Stripe emulator lives in it. */
async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = track(
    spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    }),
  );
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => {
    stdout += d;
  });
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  const status = await new Promise<number | null>((r) => child.once("close", (code) => r(code)));
  return { status, stdout, stderr };
}

type Redis = { url: string; child: ChildProcess | null; dir: string | null };

function redisMissing(): never {
  process.stderr.write(
    [
      "demo: redis-server is not on PATH, and REDIS_URL is not set.",
      "",
      "Install Redis, then run `npm run demo` again:",
      "  Debian/Ubuntu:  sudo apt-get install -y redis-server",
      "  macOS:          brew install redis",
      "",
      "Or point the demo at a Redis you already run: REDIS_URL=redis://127.0.0.1:6379 npm run demo",
      "",
    ].join("\n"),
  );
  process.exit(1);
}

async function startRedis(): Promise<Redis> {
  const fromEnv = process.env.REDIS_URL;
  if (fromEnv) {
    const u = new URL(fromEnv);
    const port = Number(u.port || 6379);
    if (!(await canConnect(u.hostname, port)))
      throw new Error(`REDIS_URL=${fromEnv}: nothing answers on ${u.hostname}:${port}`);
    return { url: fromEnv, child: null, dir: null };
  }
  // Probe before anything else runs: spawnSync would block the emulator later on.
  if (spawnSync("redis-server", ["--version"], { stdio: "ignore" }).error) redisMissing();
  const dir = join(DATA, "demo-redis");
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const logFd = openSync(join(dir, "redis-server.log"), "a");
  const child = track(
    spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        "--appendonly",
        "yes",
        "--maxmemory-policy",
        "noeviction",
        // AOF alone is the durability story simmeter documents; RDB snapshots would only add I/O.
        "--save",
        "",
      ],
      { stdio: ["ignore", logFd, logFd], detached: true },
    ),
  );
  closeSync(logFd);
  await waitFor(
    async () => {
      if (!alive(child))
        throw new Error(
          `redis-server exited (${child.exitCode}); see ${relative(process.cwd(), join(dir, "redis-server.log"))}`,
        );
      return await canConnect("127.0.0.1", port);
    },
    `redis-server on port ${port}`,
    10_000,
    50,
  );
  return { url: `redis://127.0.0.1:${port}`, child, dir };
}

/** Removes this run's keys from a Redis the demo does not own, so it leaves no litter behind. */
async function deletePrefix(url: string, prefix: string): Promise<number> {
  const r = new RedisClient(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  let deleted = 0;
  try {
    await r.connect();
    let cursor = "0";
    do {
      const [next, keys] = await r.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) deleted += await r.del(...keys);
    } while (cursor !== "0");
  } finally {
    r.disconnect();
  }
  return deleted;
}

// ---------------------------------------------------------------------------------------------
// Reading the running service.

type Depth = { waiting: number; active: number; delayed: number; failed: number };

/** The admin listener (health, metrics, the console), and the bearer token when one is set. */
type Admin = { url: string; token: string | undefined };

const adminHeaders = (a: Admin): Record<string, string> =>
  a.token ? { authorization: `Bearer ${a.token}` } : {};

async function queueDepth(admin: Admin): Promise<Depth | null> {
  try {
    const res = await fetch(`${admin.url}/metrics`, {
      signal: AbortSignal.timeout(2000),
      headers: adminHeaders(admin),
    });
    if (!res.ok) return null;
    const text = await res.text();
    const get = (state: string) => {
      const m = new RegExp(`^simmeter_queue_depth\\{state="${state}"\\} (\\S+)$`, "m").exec(text);
      return m ? Number(m[1]) : 0;
    };
    return {
      waiting: get("waiting"),
      active: get("active"),
      delayed: get("delayed"),
      failed: get("failed"),
    };
  } catch {
    return null;
  }
}

const emulatorTotal = (emu: StripeEmulator) =>
  [...emu.totalsByCustomer().values()].reduce((a, b) => a + b, 0);

let interrupted = false;
/** set while --serve waits for Ctrl-C: the signal then ends the wait instead of the process */
let stopServing: (() => void) | null = null;
// Aborts the sender's requests on Ctrl-C: simmeter's graceful shutdown waits for open requests,
// and a sender that keeps retrying would hold it up to its shutdown deadline.
const stopSending = new AbortController();
const demoFetch: typeof fetch = (input, init) => {
  if (stopSending.signal.aborted) return Promise.reject(new Error("demo is stopping"));
  const signal = init?.signal
    ? AbortSignal.any([init.signal, stopSending.signal])
    : stopSending.signal;
  return fetch(input, { ...init, signal });
};

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const flags = parseFlags();
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;

  let redis: Redis | null = null;
  let emu: StripeEmulator | null = null;
  let service: ChildProcess | null = null;
  let reader: Database.Database | null = null;
  let ticker: NodeJS.Timeout | null = null;
  let cleaning: Promise<void> | null = null;
  /** set once the run succeeded on a Redis from REDIS_URL: its keys go, a private Redis keeps them */
  let forget: { url: string; prefix: string } | null = null;

  const cleanup = () => {
    cleaning ??= (async () => {
      if (ticker) clearInterval(ticker);
      clearProgress();
      reader?.close();
      // simmeter first: it drains its HTTP server and queue while Redis is still there.
      if (service) await stopChild(service);
      for (const c of [...children]) if (c !== redis?.child) await stopChild(c);
      await emu?.close();
      if (forget) {
        const f = forget;
        await deletePrefix(f.url, f.prefix).catch((err: unknown) =>
          warn(`could not delete the demo's keys (${f.prefix}:*): ${(err as Error).message}`),
        );
      }
      if (redis?.child) await stopChild(redis.child);
    })();
    return cleaning;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopServing) {
      const stop = stopServing;
      stopServing = null;
      warn(
        `\n${signal}: stopping simmeter, the Stripe emulator${redis?.child ? " and redis-server" : ""}…`,
      );
      stop();
      return;
    }
    if (interrupted) return;
    interrupted = true;
    stopSending.abort();
    warn(
      `\n${signal}: stopping simmeter, the Stripe emulator${redis?.child ? " and redis-server" : ""}…`,
    );
    void cleanup().then(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    // 1. Redis
    redis = await startRedis();
    say(
      redis.child
        ? `redis-server   ${redis.url} (private; data in ${relative(process.cwd(), redis.dir ?? "")})`
        : `redis          ${redis.url} (from REDIS_URL)`,
    );

    // 2. Stripe
    emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
    say(`Stripe         ${emu.url} (in-process emulator)`);

    // 3. A fresh database and queue namespace, so a rerun never sees the previous run's data.
    const stamp = new Date()
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d+Z$/, "Z");
    const dbPath = join(DATA, `demo-${stamp}.db`);
    const csvPath = join(DATA, `demo-${stamp}-customers.csv`);
    const logPath = join(DATA, `demo-${stamp}-simmeter.log`);
    mkdirSync(DATA, { recursive: true });
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const publicUrl = `${baseUrl}${WEBHOOK_PATH}`;
    // The admin listener (readiness, metrics, the operator console) on a port of its own. A token
    // from the environment is kept (its login form can then be tried); otherwise the listener is
    // loopback-only and the console needs no login.
    const adminPort = await freePort();
    const adminToken = process.env.ADMIN_TOKEN || undefined;
    const admin: Admin = { url: `http://127.0.0.1:${adminPort}`, token: adminToken };
    const token = randomBytes(16).toString("hex");
    const prefix = `demo-${stamp}`;
    // Only the demo's settings: a developer's own simmeter variables (BILLING_MODE, RETENTION_DAYS,
    // a real STRIPE_SECRET_KEY…) must not leak into a run whose ground truth assumes the defaults.
    const inherited: NodeJS.ProcessEnv = { ...process.env };
    for (const key of Object.keys(envSchema.shape)) delete inherited[key];
    const env: NodeJS.ProcessEnv = {
      ...inherited,
      PORT: String(port),
      HOST: "127.0.0.1",
      ADMIN_PORT: String(adminPort),
      ADMIN_HOST: "127.0.0.1",
      ...(adminToken ? { ADMIN_TOKEN: adminToken } : {}),
      PUBLIC_URL: publicUrl,
      DATABASE_PATH: dbPath,
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      TWILIO_AUTH_TOKEN: token,
      STRIPE_SECRET_KEY: emu.apiKey,
      STRIPE_API_BASE: emu.url,
      REPORT_INTERVAL_SECONDS: "3",
      LOG_LEVEL: "warn",
    };
    say(`database       ${relative(process.cwd(), dbPath)}`);

    // 4. The fleet: the last H hours up to now (whole minutes), with Event Streams' imperfections.
    const to = Math.floor(Date.now() / 60_000) * 60_000;
    const from = to - Math.round(flags.hours * HOUR_MS);
    const fleetOptions = {
      seed: flags.seed,
      customers: flags.customers,
      sims: flags.sims,
      from,
      to,
      perturb: { duplicateRate: 0.03, lostUpdateRate: 0.05, reorder: true },
      envelope: "twilio" as const,
    };
    const sim = simulateFleet({ ...fleetOptions, billingMode: "realtime" });
    // The same fleet subscribed to data-session.ended alone, for the event-volume comparison. Its
    // layout (SIMs, customers) is identical, so it also yields the mapping before sending starts.
    const ended = simulateFleet({ ...fleetOptions, billingMode: "ended-only" });
    for (const _ of ended.events);
    const endedTruth = ended.truth();
    await writeCustomersCsv(csvPath, endedTruth.customers);
    // Imported before the service starts, so this is the database's only writer at the time.
    const db = openDb(dbPath);
    try {
      const imp = await importCustomersCsv({
        ledger: sqliteLedger(db),
        csv: readFileSync(csvPath, "utf8"),
        now: Date.now(),
      });
      if (imp.errors.length > 0)
        throw new Error(
          `customer import failed: ${imp.errors.map((e) => `line ${e.line}: ${e.message}`).join("; ")}`,
        );
      say(
        `customers      ${imp.imported} SIM assignments for ${flags.customers} customers (${relative(process.cwd(), csvPath)})`,
      );
    } finally {
      db.$client.close();
    }

    // 5. Stripe meter, then the service.
    const setup = await runCli(["stripe", "setup"], env);
    if (setup.status !== 0)
      throw new Error(`simmeter stripe setup failed (${setup.status}):\n${setup.stderr}`);
    say(`stripe setup   ${setup.stdout.trim()}`);

    const logFd = openSync(logPath, "a");
    service = track(
      spawn(process.execPath, [BIN, "start"], {
        cwd: ROOT,
        env,
        stdio: ["ignore", logFd, logFd],
        detached: true,
      }),
    );
    closeSync(logFd);
    const svc = service;
    await waitFor(
      async () => {
        if (!alive(svc))
          throw new Error(
            `simmeter start exited (${svc.exitCode}); see ${relative(process.cwd(), logPath)}`,
          );
        try {
          return (
            await fetch(`${admin.url}/readyz`, {
              signal: AbortSignal.timeout(1000),
              headers: adminHeaders(admin),
            })
          ).ok;
        } catch {
          return false;
        }
      },
      "simmeter start to become ready",
      30_000,
    );
    say(`simmeter start ${publicUrl} (log: ${relative(process.cwd(), logPath)})`);
    say();

    // 6. Deliveries through the real, signed webhook, with a live progress line.
    let phase = "sending";
    let sent: SendProgress = {
      deliveries: 0,
      events: 0,
      retries: 0,
      rejected4xx: 0,
      failed: 0,
      inFlight: 0,
    };
    let depth: Depth | null = await queueDepth(admin);
    let scraping = false;
    const sendStart = performance.now();
    let sendSeconds = 0;
    const render = () => {
      const secs = sendSeconds || (performance.now() - sendStart) / 1000;
      const rate = sent.events / Math.max(secs, 0.001);
      const queue = depth ? fmt(depth.waiting) : "?";
      showProgress(
        `[${phase}] ${fmt(sent.events)} events sent · ${fmt(rate)} events/s · queue ${queue} waiting · ${fmt(emulatorTotal(emu as StripeEmulator))} bytes reported to Stripe · ${elapsed()}`,
      );
    };
    const tick = () => {
      if (!scraping) {
        scraping = true;
        void queueDepth(admin).then((d) => {
          if (d) depth = d;
          scraping = false;
        });
      }
      render();
    };
    // Without a terminal, every phase change also gets a line: a short run may not last 2 s.
    const enter = (next: string) => {
      phase = next;
      if (!tty) render();
    };
    ticker = setInterval(tick, tty ? 250 : 2000);

    const result = await sendDeliveries({
      url: publicUrl,
      events: sim.events,
      batchMin: 1,
      batchMax: 5,
      signing: { kind: "twilio", authToken: token, publicUrl },
      concurrency: 16,
      seed: flags.seed,
      onProgress: (p) => {
        sent = p;
      },
      fetch: demoFetch,
    });
    sendSeconds = (performance.now() - sendStart) / 1000;
    const truth = sim.truth();
    if (result.rejectedEvents > 0 || result.failedEvents > 0) {
      throw new Error(
        `${result.rejectedEvents} events were rejected and ${result.failedEvents} could not be delivered (statuses ${JSON.stringify(result.statusCounts)}); see ${relative(process.cwd(), logPath)}`,
      );
    }

    // 7. Drain: every distinct event (duplicates share an event id) is in seen_events once counted.
    enter("counting");
    const distinct = truth.events - truth.duplicates;
    reader = new Database(dbPath, { readonly: true, fileMustExist: true });
    const seenStmt = reader.prepare("select count(*) as n from seen_events");
    const quarantineStmt = reader.prepare("select count(*) as n from quarantine");
    const pendingStmt = reader.prepare(
      "select count(*) as n from meter_reports where state = 'pending'",
    );
    const count = (s: Database.Statement) => (s.get() as { n: number }).n;
    let lastSeen = -1;
    let lastChange = Date.now();
    await waitFor(
      async () => {
        const seen = count(seenStmt);
        const quarantined = count(quarantineStmt);
        const d = await queueDepth(admin);
        if (d) depth = d;
        const empty = d !== null && d.waiting + d.active + d.delayed === 0;
        if (seen !== lastSeen) {
          lastSeen = seen;
          lastChange = Date.now();
        }
        if (empty && seen + quarantined >= distinct) return true;
        if (Date.now() - lastChange > 30_000)
          throw new Error(
            `ingest stalled at ${seen} of ${distinct} events (${quarantined} quarantined, queue ${JSON.stringify(d)}); see ${relative(process.cwd(), logPath)}`,
          );
        return false;
      },
      "the worker to count every event",
      10 * 60_000,
      100,
    );
    const quarantined = count(quarantineStmt);

    // The service reports every 3 s; one explicit run makes sure the final hour is in.
    enter("reporting");
    const report = await runCli(["report", "--json"], env);
    if (report.status !== 0)
      warn(`simmeter report exited ${report.status}: ${report.stderr.trim() || report.stdout}`);

    // Stripe is settled once nothing is pending and its totals stopped moving.
    enter("settling");
    let lastTotal = -1;
    let stableSince = Date.now();
    await waitFor(
      () => {
        const total = emulatorTotal(emu as StripeEmulator);
        if (total !== lastTotal) {
          lastTotal = total;
          stableSince = Date.now();
        }
        return count(pendingStmt) === 0 && Date.now() - stableSince >= 1500;
      },
      "the Stripe totals to settle",
      60_000,
      100,
    );
    clearInterval(ticker);
    ticker = null;
    enter("done");
    clearProgress();
    say(
      `sent ${fmt(result.events)} events in ${fmt(result.deliveries)} signed deliveries in ${sendSeconds.toFixed(1)} s (${fmt(result.events / Math.max(sendSeconds, 0.001))} events/s, p99 ${result.latenciesMs.p99} ms, ${result.retries} retries)`,
    );
    say(
      `  incl. ${fmt(truth.duplicates)} duplicates, ${fmt(truth.lostUpdates)} updates never sent (lost), reordered within 3 min; ${fmt(distinct)} distinct events counted, ${quarantined} quarantined`,
    );

    // 8. Per customer: counted (simmeter reconcile), Stripe (emulator), ground truth (simulator).
    const problemsBefore: string[] = [];
    const rec = await runCli(["reconcile", "--json"], env);
    // --json prints snake_case keys (docs/json.md): stripe_drift.
    let rows: (Omit<DriftRow, "stripeDrift"> & { stripe_drift: number | null })[];
    try {
      rows = JSON.parse(rec.stdout) as typeof rows;
    } catch {
      throw new Error(`simmeter reconcile printed no JSON (${rec.status}):\n${rec.stderr}`);
    }
    const byCustomer = new Map(rows.map((r) => [r.customer, r]));
    // What the customers pay: the invoice line quantities (the previous period's invoice and the
    // open period's preview), from simmeter's own invoice parity.
    const invoiced = new Map<string, number>();
    for (const period of ["previous", "current"]) {
      const p = await runCli(["reconcile", "--period", period, "--json"], env);
      let parity: ParityRow[];
      try {
        parity = JSON.parse(p.stdout) as ParityRow[];
      } catch {
        throw new Error(
          `simmeter reconcile --period ${period} printed no JSON (${p.status}):\n${p.stderr}`,
        );
      }
      for (const r of parity) {
        invoiced.set(r.customer, (invoiced.get(r.customer) ?? 0) + (r.invoice_quantity ?? 0));
        if (r.problem === null && (r.difference !== 0 || r.unreported !== 0))
          problemsBefore.push(
            `${r.customer} (${period} period): invoice ${r.invoice_quantity}, reported ${r.reported}, unreported ${r.unreported}`,
          );
      }
    }
    const stripeTotals = (emu as StripeEmulator).totalsByCustomer();
    const simsOf = new Map<string, number>();
    for (const c of Object.values(truth.customers)) simsOf.set(c, (simsOf.get(c) ?? 0) + 1);
    const customers = [
      ...new Set([...truth.customerHour.keys(), ...byCustomer.keys(), ...stripeTotals.keys()]),
    ].sort();
    const problems: string[] = [...problemsBefore];
    const table: string[][] = [];
    const sum = { sims: 0, counted: 0, stripe: 0, invoiced: 0, drift: 0, truth: 0 };
    for (const c of customers) {
      const counted = byCustomer.get(c)?.counted ?? 0;
      const stripe = stripeTotals.get(c) ?? 0;
      const expected = [...(truth.customerHour.get(c)?.values() ?? [])].reduce((a, b) => a + b, 0);
      const drift = counted - stripe;
      const onInvoices = invoiced.get(c) ?? 0;
      const sims = simsOf.get(c) ?? 0;
      const ok = drift === 0 && counted === expected && onInvoices === counted;
      if (drift !== 0) problems.push(`${c}: counted ${fmt(counted)} but Stripe has ${fmt(stripe)}`);
      if (onInvoices !== counted)
        problems.push(`${c}: counted ${fmt(counted)} but its invoices show ${fmt(onInvoices)}`);
      if (counted !== expected)
        problems.push(`${c}: counted ${fmt(counted)} but the ground truth is ${fmt(expected)}`);
      const r = byCustomer.get(c);
      if (r && (r.unreported !== 0 || (r.stripe_drift ?? 0) !== 0 || r.pending !== 0))
        problems.push(
          `${c}: simmeter reconcile reports unreported ${r.unreported}, pending ${r.pending}, stripe drift ${r.stripe_drift}`,
        );
      table.push([
        c,
        fmt(sims),
        fmt(counted),
        fmt(stripe),
        fmt(drift),
        fmt(onInvoices),
        fmt(onInvoices - counted),
        fmt(expected),
        ok ? "ok" : "MISMATCH",
      ]);
      sum.sims += sims;
      sum.counted += counted;
      sum.stripe += stripe;
      sum.invoiced += onInvoices;
      sum.drift += drift;
      sum.truth += expected;
    }
    const total = [
      "total",
      fmt(sum.sims),
      fmt(sum.counted),
      fmt(sum.stripe),
      fmt(sum.drift),
      fmt(sum.invoiced),
      fmt(sum.invoiced - sum.counted),
      fmt(sum.truth),
      problems.length === 0 ? "ok" : "MISMATCH",
    ];
    const head = [
      "customer",
      "SIMs",
      "bytes counted",
      "bytes in Stripe",
      "drift",
      "on invoices",
      "difference",
      "ground truth",
      "",
    ];
    const all = [head, ...table, total];
    const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
    const line = (r: string[]) =>
      r
        .map((v, i) =>
          i === 0 || i === r.length - 1 ? v.padEnd(widths[i] ?? 0) : v.padStart(widths[i] ?? 0),
        )
        .join("  ")
        .trimEnd();
    const rule = widths.map((w) => "-".repeat(w)).join("  ");
    say();
    say(
      "drift = bytes counted − bytes in Stripe; on invoices = the invoice line quantities (previous invoice + open period preview); difference = on invoices − bytes counted; ground truth = bytes the simulator says were used",
    );
    say(line(head));
    say(rule);
    for (const r of table) say(line(r));
    say(rule);
    say(line(total));
    if (rec.status !== 0 && problems.length === 0)
      problems.push(`simmeter reconcile exited ${rec.status}: ${rec.stderr.trim()}`);

    // The itemisation an IoT customer asks for ("which device?"): one per-SIM statement.
    const first = customers.find((c) => (invoiced.get(c) ?? 0) > 0);
    if (first) {
      const st = await runCli(
        ["statement", "--customer", first, "--period", "current", "--format", "csv"],
        env,
      );
      const statementPath = join(DATA, `demo-${stamp}-statement-${first}.csv`);
      writeFileSync(statementPath, st.stdout);
      const simLines = st.stdout.split("\n").filter((l) => l.startsWith("sim,")).length;
      say();
      say(
        `statement      ${relative(process.cwd(), statementPath)}: ${first}'s current invoice, ${simLines} SIM line(s) (simmeter statement --customer ${first})`,
      );
      if (st.status !== 0)
        problems.push(`simmeter statement exited ${st.status}: ${st.stderr.trim()}`);
    }

    // Event volume of the two subscriptions, scaled to a month per device.
    const endedEvents = endedTruth.events;
    const hours = (truth.to - truth.from) / HOUR_MS;
    const perDeviceMonth = (events: number) => (events / flags.sims / hours) * 24 * 30;
    const realtimeMonthly = perDeviceMonth(truth.events);
    const endedMonthly = perDeviceMonth(endedEvents);
    const reduction = truth.events > 0 ? (1 - endedEvents / truth.events) * 100 : 0;
    say();
    say(
      `events per device per 30-day month for this traffic (${fmt(truth.events)} vs ${fmt(endedEvents)} events from ${flags.sims} SIMs in ${hours.toFixed(1)} h):`,
    );
    say(
      `  realtime   (all connection events)      ${fmt(realtimeMonthly).padStart(8)} events/device/month`,
    );
    say(
      `  ended-only (data-session.ended only)    ${fmt(endedMonthly).padStart(8)} events/device/month`,
    );
    say(
      `  reduction  ${reduction.toFixed(1)} % fewer events; usage then arrives only when a session ends, not every ~6 min`,
    );
    say();

    let code = 0;
    if (problems.length > 0) {
      say(`FAILED after ${elapsed()}:`);
      for (const p of problems) say(`  ${p}`);
      code = 1;
    } else {
      if (!redis.child) forget = { url: redis.url, prefix };
      say(
        `OK: every customer's usage is counted exactly once and is in Stripe, matching the ground truth (${elapsed()})`,
      );
    }
    if (flags.serve && !interrupted) {
      say();
      say(`console        ${admin.url}/console`);
      if (adminToken)
        say(`               sign in with ADMIN_TOKEN (from your environment): ${adminToken}`);
      else say("               loopback only, no login (ADMIN_TOKEN is not set)");
      say(
        `               queues: ${admin.url}/console/queues · API: ${admin.url}/api/openapi.json`,
      );
      say("serving until Ctrl-C (simmeter keeps reporting to the emulator every 3 s)");
      await new Promise<void>((resolve) => {
        stopServing = resolve;
      });
    }
    return code;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    // After Ctrl-C the signal handler owns the exit; errors from torn-down parts are expected.
    if (interrupted) return;
    clearProgress();
    process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
