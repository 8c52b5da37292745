// A ledger filled the way production fills it, for the console's browser test and for
// scripts/screenshots.ts: the simulator sends a fleet through the real signed webhook of a real
// `simmeter start`, the real reporter reports it to the Stripe emulator, with what an operator
// meets in practice — one customer whose meter events Stripe refuses (stopped rows), one SIM no
// assignment covers (unmapped), an event older than the retention and a broken one (quarantined).
// Then simmeter restarts with a longer RETENTION_DAYS, so the old event can be requeued and counted.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { type StripeEmulator, startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { importCustomersCsv } from "../../src/customers/customers.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { sendDeliveries, writeCustomersCsv } from "../../src/simulate/output.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import {
  runCli,
  type SimmeterProcess,
  startSimmeter,
  tempDir,
  waitFor,
} from "../helpers/process.ts";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Headless Chromium from the system (never downloaded). */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: install chromium: apt-get install -y chromium`);
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], headless: true });
}

export const ADMIN_TOKEN = "console-test-token-0123456789abcdef";
const TWILIO_TOKEN = "console-test-twilio-auth-token";
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export type ConsoleRig = {
  app: SimmeterProcess;
  adminUrl: string;
  token: string;
  /**
   * the ledger simmeter writes, on the backend SIMMETER_TEST_BACKEND names (SQLite: a temp file;
   * scripts/screenshots.ts, outside vitest, always gets that); closed by stop()
   */
  ledger: TestLedger;
  emu: StripeEmulator;
  /** the env a CLI command needs to read this ledger (and Stripe, and Redis) */
  env: Record<string, string | undefined>;
  cli: (args: string[]) => Promise<unknown>;
  customers: string[];
  /** the customer whose meter events Stripe refused until the test lifts the fault */
  refused: string;
  unmappedSim: string;
  /** a mapped SIM with usage, and its customer */
  mappedSim: string;
  mappedCustomer: string;
  /** the event quarantined as older than the retention, and its bytes */
  oldEvent: { sid: string; bytes: number; sim: string };
  brokenEventSid: string;
  /** a `select … as n` on the ledger */
  count: (sql: string) => Promise<number>;
  stop: () => Promise<void>;
};

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

const hex32 = (n: number) => n.toString(16).padStart(32, "0");

export async function consoleRig(o: {
  redisUrl: string;
  sims?: number;
  customers?: number;
  hours?: number;
  seed?: number;
  /** progress lines (the screenshots script prints them) */
  log?: (line: string) => void;
}): Promise<ConsoleRig> {
  const log = o.log ?? (() => {});
  const dir = tempDir("simmeter-console-");
  const ledger = await openTestLedger({ file: true, autoClose: false });
  const emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
  const to = Math.floor(Date.now() / 60_000) * 60_000;
  const fleet = {
    seed: o.seed ?? 11,
    customers: o.customers ?? 3,
    sims: o.sims ?? 10,
    from: to - (o.hours ?? 8) * HOUR_MS,
    to,
    perturb: { duplicateRate: 0.03, lostUpdateRate: 0.05, reorder: true },
    envelope: "twilio" as const,
  };
  // The layout first (who owns which SIM), from a run of the same fleet nobody sends.
  const layout = simulateFleet(fleet);
  let template: Record<string, unknown> | null = null;
  for (const e of layout.events) {
    if (!template && String(e.type).endsWith("data-session.ended")) template = e;
  }
  const truth = layout.truth();
  const sims = Object.keys(truth.customers).sort();
  const customers = [...new Set(Object.values(truth.customers))].sort();
  const unmappedSim = sims[sims.length - 1] as string;
  const mapped = { ...truth.customers };
  delete mapped[unmappedSim];
  const refused = customers[customers.length - 1] as string;
  const data = (template as { data: Record<string, unknown> }).data;
  const mappedSim =
    String(data.sim_sid) === unmappedSim ? (sims[0] as string) : String(data.sim_sid);
  const mappedCustomer = truth.customers[mappedSim] as string;

  const csv = join(dir, "customers.csv");
  await writeCustomersCsv(csv, mapped);
  const imp = await importCustomersCsv({
    ledger: ledger.ledger,
    csv: readFileSync(csv, "utf8"),
    now: Date.now(),
  });
  if (imp.errors.length) throw new Error(`import: ${JSON.stringify(imp.errors)}`);

  const port = await freePort();
  const adminPort = await freePort();
  const publicUrl = `http://127.0.0.1:${port}/webhooks/event-streams`;
  const env: Record<string, string | undefined> = {
    PORT: String(port),
    ADMIN_PORT: String(adminPort),
    ADMIN_HOST: "127.0.0.1",
    ADMIN_TOKEN,
    PUBLIC_URL: publicUrl,
    TWILIO_AUTH_TOKEN: TWILIO_TOKEN,
    ...ledger.env,
    REDIS_URL: o.redisUrl,
    REDIS_PREFIX: `console${Math.random().toString(36).slice(2, 8)}`,
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    REPORT_INTERVAL_SECONDS: "2",
    SUBSCRIPTION_REFRESH_SECONDS: "10",
    RETENTION_DAYS: "40",
    LOG_LEVEL: "warn",
  };
  const cli = async (args: string[]) => {
    const r = await runCli(args, env);
    try {
      return JSON.parse(r.stdout) as unknown;
    } catch {
      throw new Error(
        `simmeter ${args.join(" ")} printed no JSON (exit ${r.status}):\n${r.stdout}\n${r.stderr}`,
      );
    }
  };
  // What `simmeter stripe setup` does, in-process (a CLI start costs seconds on a busy machine).
  await ensureMeter(
    createStripe({
      STRIPE_SECRET_KEY: emu.apiKey,
      STRIPE_API_BASE: emu.url,
      STRIPE_TIMEOUT_MS: 5000,
    }),
    "supersim_data_bytes",
  );
  // Stripe refuses this customer's meter events, as for a customer deleted in Stripe.
  emu.setFaults({ refuseCustomers: [refused] });

  let app = await startSimmeter("start", env);
  log(`simmeter start: webhook ${app.url}, admin ${app.adminUrl}`);
  const send = async (events: Iterable<unknown>) => {
    const r = await sendDeliveries({
      url: publicUrl,
      events,
      batchMin: 1,
      batchMax: 5,
      signing: { kind: "twilio", authToken: TWILIO_TOKEN, publicUrl },
      concurrency: 8,
      seed: fleet.seed,
    });
    if (r.rejectedEvents || r.failedEvents)
      throw new Error(`deliveries refused: ${JSON.stringify(r.statusCounts)}`);
    return r;
  };
  const sent = await send(simulateFleet(fleet).events);
  log(`sent ${sent.events} events in ${sent.deliveries} signed deliveries`);

  // An event older than RETENTION_DAYS (quarantined; counted once the retention is raised and it
  // is requeued), and one whose ICCID is broken (quarantined again when requeued).
  const old = clone(template) as {
    id: string;
    time: string;
    source: string;
    data: Record<string, unknown>;
  };
  const oldAt = Date.now() - 41 * DAY_MS;
  const oldSid = `EZ${hex32(0xc0ffee)}`;
  const iso = (t: number) => new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");
  Object.assign(old.data, {
    event_sid: oldSid,
    sim_sid: mappedSim,
    sim_iccid: (await simIccid(ledger, mappedSim)) ?? old.data.sim_iccid,
    timestamp: iso(oldAt),
    data_session_sid: `QE${hex32(0xbeef)}`,
    data_session_start_time: iso(oldAt - 20 * 60_000),
    data_session_end_time: iso(oldAt),
    data_session_update_start_time: iso(oldAt - 5 * 60_000),
    data_session_update_end_time: iso(oldAt),
    data_download: 1_000_000,
    data_upload: 234_567,
    data_total: 1_234_567,
    data_session_data_download: 1_000_000,
    data_session_data_upload: 234_567,
    data_session_data_total: 1_234_567,
  });
  delete old.data.fleet_sid;
  old.id = oldSid;
  old.source = `/v1/SuperSim/ConnectionEvents/${oldSid}`;
  old.time = new Date(oldAt).toISOString();
  const broken = clone(template) as typeof old;
  const brokenSid = `EZ${hex32(0xbad)}`;
  Object.assign(broken.data, { event_sid: brokenSid, sim_iccid: "not-an-iccid" });
  broken.id = brokenSid;
  await send([old, broken]);

  const count = async (sql: string) => Number((await ledger.sql<{ n: number }>(sql))[0]?.n);
  const distinct = truth.events - truth.duplicates + 2;
  await waitFor(
    async () =>
      (await count(
        "select (select count(*) from seen_events) + (select count(*) from quarantine) as n",
      )) >= distinct,
    "every event counted or quarantined",
    60_000,
    100,
  );
  // Reported: nothing pending, the refused customer's rows stopped.
  await waitFor(
    async () =>
      (await count("select count(*) as n from meter_reports where state = 'pending'")) === 0 &&
      (await count("select count(*) as n from meter_reports where state = 'failed'")) > 0 &&
      (await count("select count(*) as n from meter_reports where state = 'sent'")) > 0,
    "the reporter to send every customer but the refused one",
    60_000,
    200,
  );
  log("ledger filled and reported; restarting with RETENTION_DAYS=60");
  await app.stop();
  app = await startSimmeter("start", { ...env, RETENTION_DAYS: "60" });
  env.RETENTION_DAYS = "60";
  await waitFor(
    async () =>
      (
        await fetch(`${app.adminUrl}/readyz`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        })
      ).ok,
    "simmeter ready again",
    30_000,
  );
  return {
    app,
    adminUrl: app.adminUrl,
    token: ADMIN_TOKEN,
    ledger,
    emu,
    env,
    cli,
    customers,
    refused,
    unmappedSim,
    mappedSim,
    mappedCustomer,
    oldEvent: { sid: oldSid, bytes: 1_234_567, sim: mappedSim },
    brokenEventSid: brokenSid,
    count,
    stop: async () => {
      await app.stop();
      await emu.close();
      await ledger.close();
    },
  };
}

async function simIccid(ledger: TestLedger, sim: string): Promise<string | null> {
  // The SIM row exists once its first event is counted; wait for it.
  return await waitFor(
    async () =>
      (await ledger.sql<{ iccid: string }>("select iccid from sims where sim_sid = ?", sim))[0]
        ?.iccid ?? null,
    `SIM ${sim} to be recorded`,
    30_000,
    100,
  );
}

export const SCREENSHOT_DIR = fileURLToPath(new URL("../../docs/screenshots/", import.meta.url));

/**
 * Saves the page as docs/screenshots/<name>.png (light) and <name>-dark.png, once its charts are
 * drawn. The test run and scripts/screenshots.ts both write them.
 */
export async function shoot(page: Page, name: string, dir = SCREENSHOT_DIR): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await page.waitForFunction(() => document.body.getAttribute("data-ready") === "1");
  for (const scheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    // Chart.js redraws on the scheme change; give it a frame.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
    await page.screenshot({
      path: join(dir, `${name}${scheme === "dark" ? "-dark" : ""}.png`),
      fullPage: true,
    });
  }
  await page.emulateMedia({ colorScheme: "light" });
}

/** Signs a browser page in through the login form. */
export async function login(page: Page, adminUrl: string, token: string): Promise<void> {
  await page.goto(`${adminUrl}/console`);
  await page.waitForURL(/\/console\/login/);
  await page.fill("input[name=token]", token);
  await Promise.all([page.waitForURL(/\/console$/), page.click("[data-testid=login]")]);
}
