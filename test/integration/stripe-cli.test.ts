import { existsSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import type { StripeEmulatorOptions } from "../../scripts/stripe-emulator.ts";
import { HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import { findMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { stripeCliWorkspace } from "../helpers/cli.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger, type TestLedger, testBackend } from "../helpers/ledger.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";
import { assignSimVia, sessionInHour } from "../helpers/seed.ts";

// `simmeter stripe setup`, `doctor` and `report` as real child processes, each test against its
// own ledger (SQLite: a file; PostgreSQL: a database, by SIMMETER_TEST_BACKEND) and its own
// in-process Stripe emulator (runCli does not block this process, so
// the emulator keeps answering while the CLI runs), with the shared test Redis under a fresh prefix.

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const SIM_A = `HS${"a".repeat(32)}`;
const SIM_B = `HS${"b".repeat(32)}`;
const ICCID_A = "89883070000005381783";
const ICCID_B = "89883070000005381791";
const MINUTE = 60_000;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const backend = testBackend();

/**
 * stripeCliWorkspace with a ledger of the test's backend: every `cli` call runs with its env
 * (DATABASE_PATH or DATABASE_URL). `dbPath` stays the workspace's SQLite path, never created.
 * PostgreSQL: its database with synchronous_commit on (the test cluster runs with it off, which
 * doctor rightly warns about, as cli-doctor.test.ts does), so that only what a test sets up warns.
 */
async function workspace(emulator: StripeEmulatorOptions = {}) {
  const w = await stripeCliWorkspace({
    dirPrefix: "simmeter-stripe-cli-",
    redisPrefix: "cli",
    emulator: { autoSubscribe: true, ...emulator },
    cleanup: (close) => cleanups.push(close),
  });
  const t = await openTestLedger({ file: true, autoClose: false });
  cleanups.push(() => t.close());
  if (t.env.DATABASE_URL)
    await t.sql(
      `alter database "${new URL(t.env.DATABASE_URL).pathname.slice(1)}" set synchronous_commit = on`,
    );
  const cli: typeof w.cli = (args, extraEnv = {}) => w.cli(args, { ...t.env, ...extraEnv });
  const json = async <T>(args: string[]) => JSON.parse((await cli(args)).stdout) as T;
  return { ...w, t, env: { ...w.env, ...t.env }, cli, json };
}

/** An hour bucket that ended a while ago by the real clock (the CLI reads the real clock). */
const pastHour = (hoursAgo: number) => hourStart(Date.now()) - hoursAgo * HOUR_MS;
const hex32 = (n: number) => n.toString(16).padStart(32, "0");

/** Writes counted usage and SIM → customer assignments into the workspace's ledger. */
async function seed(
  t: TestLedger,
  o: {
    events?: unknown[];
    assign?: { sim: string; customer: string }[];
  },
): Promise<void> {
  if (o.events) {
    const s = await t.ledger.ingestJob(
      {
        v: 1,
        deliveries: [{ id: "seed", receivedAt: Date.now(), source: "replay", events: o.events }],
      },
      defaultSettings,
      Date.now,
    );
    expect(s.quarantined).toBe(0);
    expect(s.counted).toBe(o.events.length);
  }
  for (const a of o.assign ?? [])
    await assignSimVia(t.ledger, {
      sim: a.sim,
      customer: a.customer,
      effectiveFrom: pastHour(48),
    });
}

/** every table of the ledger's public schema with its rows (PostgreSQL) */
async function tableContents(t: TestLedger): Promise<Record<string, unknown[]>> {
  const tables = await t.sql<{ t: string }>(
    "select tablename as t from pg_tables where schemaname = 'public' order by tablename",
  );
  const out: Record<string, unknown[]> = {};
  for (const { t: name } of tables) out[name] = await t.sql(`select * from "${name}"`);
  return out;
}

/** Parses the CLI's aligned table (two or more spaces between columns) into rows of cells. */
function tableRows(text: string, firstHeader: string): string[][] {
  const lines = text.split("\n");
  const head = lines.findIndex((l) => l.startsWith(firstHeader));
  if (head < 0) throw new Error(`no table with a ${firstHeader} column in:\n${text}`);
  const rows: string[][] = [];
  for (const l of lines.slice(head + 2)) {
    if (l.trim() === "") break;
    rows.push(l.trim().split(/\s{2,}/));
  }
  return rows;
}

/** doctor's table by check name, in the order printed. */
function doctorChecks(stdout: string): Record<string, { result: string; detail: string }> {
  const out: Record<string, { result: string; detail: string }> = {};
  for (const [check = "", result = "", detail = ""] of tableRows(stdout, "check"))
    out[check] = { result, detail };
  return out;
}

describe("simmeter stripe setup (CLI)", () => {
  it("creates the meter on the first run, says it exists on the second, and exits 0 both times", async () => {
    const w = await workspace();
    const first = await w.cli(["stripe", "setup"]);
    expect(first.stderr).toBe("");
    expect(first.status).toBe(0);
    const created = /^meter (mtr_\S+) \(supersim_data_bytes\): created\n$/.exec(first.stdout);
    expect(created, first.stdout).not.toBeNull();

    const second = await w.cli(["stripe", "setup"]);
    expect(second.stderr).toBe("");
    expect(second.status).toBe(0);
    expect(second.stdout).toBe(`meter ${created?.[1]} (${EVENT_NAME}): exists\n`);

    const meters = await w.stripe.billing.meters.list({ limit: 100 });
    expect(meters.data.map((m) => m.id)).toEqual([created?.[1]]);
    expect(meters.data[0]).toMatchObject({
      event_name: EVENT_NAME,
      status: "active",
      default_aggregation: { formula: "sum" },
      customer_mapping: { event_payload_key: "stripe_customer_id" },
      value_settings: { event_payload_key: "value" },
    });
  });

  it("reports a meter deactivated in Stripe as inactive and exits non-zero; --reactivate reactivates it", async () => {
    const w = await workspace();
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);
    const meter = await findMeter(w.stripe, EVENT_NAME);
    if (!meter) throw new Error("stripe setup created no meter");
    await w.stripe.billing.meters.deactivate(meter.id);

    const inactive = await w.cli(["stripe", "setup"]);
    expect(inactive.status).not.toBe(0);
    expect(inactive.stdout).toBe(`meter ${meter.id} (${EVENT_NAME}): inactive\n`);
    expect(inactive.stderr).toContain(`problem: meter ${meter.id} is inactive`);
    expect(inactive.stderr).toContain("simmeter stripe setup --reactivate");
    expect((await w.stripe.billing.meters.retrieve(meter.id)).status).toBe("inactive");

    const reactivated = await w.cli(["stripe", "setup", "--reactivate"]);
    expect(reactivated.stderr).toBe("");
    expect(reactivated.status).toBe(0);
    expect(reactivated.stdout).toBe(`meter ${meter.id} (${EVENT_NAME}): reactivated\n`);
    expect((await w.stripe.billing.meters.retrieve(meter.id)).status).toBe("active");

    const again = await w.cli(["stripe", "setup"]);
    expect(again.status).toBe(0);
    expect(again.stdout).toBe(`meter ${meter.id} (${EVENT_NAME}): exists\n`);
    expect((await w.stripe.billing.meters.list({ limit: 100 })).data).toHaveLength(1);
  });
});

describe("simmeter doctor (CLI)", () => {
  it("exits 1 and names simmeter stripe setup as the fix when the meter is missing", async () => {
    const w = await workspace();
    const r = await w.cli(["doctor"]);
    expect(r.status).toBe(1);
    const checks = doctorChecks(r.stdout);
    expect(checks.meter?.result).toBe("fail");
    expect(checks.meter?.detail).toContain("simmeter stripe setup");
    expect(checks["stripe key"]?.result).toBe("ok");
    expect(checks.redis?.result).toBe("ok");
  });

  it("after stripe setup, exits 0 with every check ok when every mapped customer exists in Stripe", async () => {
    const w = await workspace();
    w.emu.addCustomer("cus_alpha");
    w.emu.addCustomer("cus_beta");
    await seed(w.t, {
      assign: [
        { sim: SIM_A, customer: "cus_alpha" },
        { sim: SIM_B, customer: "cus_beta" },
      ],
    });
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);

    // A receiver's settings, so the webhook check passes too.
    const r = await w.cli(["doctor"], {
      TWILIO_AUTH_TOKEN: "0123456789abcdef0123456789abcdef",
      PUBLIC_URL: "https://billing.example.com/webhooks/event-streams",
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const checks = doctorChecks(r.stdout);
    expect(Object.keys(checks)).toEqual([
      "database",
      // PostgreSQL's own checks follow the connection's (cli-doctor-pg.test.ts tests each)
      ...(backend === "postgres"
        ? [
            "postgres version",
            "postgres migrations",
            "postgres read-only",
            "postgres synchronous_commit",
            "postgres timeouts",
            "postgres connections",
          ]
        : []),
      "redis",
      "redis eviction",
      "redis persistence",
      "quarantine",
      "unmapped usage",
      "outbox",
      "reporting",
      "webhook",
      "stripe key",
      "stripe clock",
      "meter",
      "customers",
      "subscriptions",
      "invoice grace",
    ]);
    // No worker has run here, so no report schedule is in Redis: the one warning.
    expect(checks.reporting?.result).toBe("warn");
    expect(checks.reporting?.detail).toContain("no report schedule in Redis");
    for (const [name, c] of Object.entries(checks))
      if (name !== "reporting") expect(c.result, name).toBe("ok");
    expect(checks.customers?.detail).toBe("every mapped customer exists");
    expect(checks["stripe key"]?.detail).toBe("test mode");
  });

  it("warns, naming the customer, when a mapped customer is unknown to Stripe, and still exits 0", async () => {
    const w = await workspace();
    w.emu.addCustomer("cus_alpha");
    await seed(w.t, {
      assign: [
        { sim: SIM_A, customer: "cus_alpha" },
        { sim: SIM_B, customer: "cus_ghost" },
      ],
    });
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);

    const r = await w.cli(["doctor"]);
    // doctor sets a non-zero exit code only for "fail" checks; an unknown customer is a "warn".
    expect(r.status).toBe(0);
    const checks = doctorChecks(r.stdout);
    expect(checks.customers?.result).toBe("warn");
    expect(checks.customers?.detail).toBe("mapped but unknown to Stripe: cus_ghost");
    expect(checks.meter?.result).toBe("ok");
  });

  it("in ended-only mode, fails the billing-mode check naming schema version 2 when ended events without cumulative totals were refused", async () => {
    const w = await workspace();
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);
    const t = pastHour(2);
    const v1Ended = buildCloudEvent({
      eventSid: `EZ${hex32(77)}`,
      kind: "data-session.ended",
      accountSid: ACCOUNT,
      simSid: SIM_A,
      iccid: ICCID_A,
      timestampMs: t + 30 * MINUTE,
      sessionSid: `PI${hex32(77)}`,
      sessionStartMs: t,
      sessionEndMs: t + 30 * MINUTE,
      windowStartMs: t + 20 * MINUTE,
      windowEndMs: t + 30 * MINUTE,
      windowDown: 500,
      schemaVersion: 1,
    });
    const settings = { ...defaultSettings, billingMode: "ended-only" as const };
    await w.t.ledger.ingestJob(
      {
        v: 1,
        deliveries: [{ id: "v1", receivedAt: Date.now(), source: "replay", events: [v1Ended] }],
      },
      settings,
      Date.now,
    );
    expect(await w.t.sql("select count(*) as n from usage_hourly")).toEqual([{ n: 0 }]);

    const ok = await w.cli(["doctor"]);
    expect(doctorChecks(ok.stdout)["billing mode"]).toBeUndefined();
    const r = await w.cli(["doctor"], { BILLING_MODE: "ended-only" });
    expect(r.status).toBe(1);
    const check = doctorChecks(r.stdout)["billing mode"];
    expect(check?.result).toBe("fail");
    expect(check?.detail).toContain(
      "1 data-session.ended event(s) without data_session_data_total",
    );
    expect(check?.detail).toContain("schema version 2");
  });

  it("exits 1 with Stripe's message about the key when STRIPE_SECRET_KEY is wrong", async () => {
    const w = await workspace();
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);
    const r = await w.cli(["doctor"], { STRIPE_SECRET_KEY: "sk_test_wrong" });
    expect(r.status).toBe(1);
    const checks = doctorChecks(r.stdout);
    expect(checks["stripe key"]?.result).toBe("fail");
    expect(checks["stripe key"]?.detail).toContain("Invalid API Key provided");
    expect(checks.meter).toBeUndefined();
    expect(checks.redis?.result).toBe("ok");
  });
});

describe("simmeter report (CLI)", () => {
  it("--dry-run prints the rows it would send and sends and writes nothing; a real report then sends exactly those rows", async () => {
    const w = await workspace({ acceptAnyCustomer: true });
    const h1 = pastHour(3);
    const h2 = pastHour(2);
    await seed(w.t, {
      events: [
        ...sessionInHour(SIM_A, ICCID_A, 1, h1, 4200),
        ...sessionInHour(SIM_A, ICCID_A, 2, h2, 1000),
        ...sessionInHour(SIM_B, ICCID_B, 3, h2, 777),
      ],
      assign: [
        { sim: SIM_A, customer: "cus_alpha" },
        { sim: SIM_B, customer: "cus_beta" },
      ],
    });
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);

    const expected = [
      { identifier: `v1:cus_alpha:${h1 / 1000}:0`, customer: "cus_alpha", value: 4200 },
      { identifier: `v1:cus_alpha:${h2 / 1000}:0`, customer: "cus_alpha", value: 1000 },
      { identifier: `v1:cus_beta:${h2 / 1000}:0`, customer: "cus_beta", value: 777 },
    ];
    const dry = await w.cli(["report", "--dry-run"]);
    expect(dry.stderr).toBe("");
    expect(dry.status).toBe(0);
    const rows = tableRows(dry.stdout, "identifier");
    expect(
      rows.map(([identifier, customer, , value]) => ({ identifier, customer, value })),
    ).toEqual(expected.map((e) => ({ ...e, value: String(e.value) })));
    for (const row of rows) expect(row.at(-1)).toBe("new");

    const dryJson = await w.cli(["report", "--dry-run", "--json"]);
    expect(dryJson.status).toBe(0);
    expect(
      (JSON.parse(dryJson.stdout) as { identifier: string; hour: string; note: string }[]).map(
        (r) => [r.identifier, r.hour, r.note],
      ),
    ).toEqual([
      [expected[0]?.identifier, new Date(h1).toISOString(), "new"],
      [expected[1]?.identifier, new Date(h2).toISOString(), "new"],
      [expected[2]?.identifier, new Date(h2).toISOString(), "new"],
    ]);

    expect(w.emu.events()).toEqual([]);
    expect(w.emu.stats().meterEventCalls).toBe(0);
    const status = await w.cli(["report", "--status", "--json"]);
    expect(status.status).toBe(0);
    expect(JSON.parse(status.stdout)).toEqual({
      states: [],
      pending: { rows: 0, bytes: 0, oldest_created_at: null },
      stopped: [],
      held: [],
      unmapped_bytes: 0,
    });

    const real = await w.cli(["report", "--json"]);
    expect(real.stderr).toBe("");
    expect(real.status).toBe(0);
    expect(JSON.parse(real.stdout)).toMatchObject({ planned: 3, sent: 3, failed: 0 });
    expect(
      w.emu
        .events()
        .map((e) => ({ identifier: e.identifier, customer: e.customer, value: e.value }))
        .sort((a, b) => (a.identifier < b.identifier ? -1 : 1)),
    ).toEqual(expected);

    const after = await w.cli(["report", "--dry-run"]);
    expect(after.status).toBe(0);
    expect(after.stdout).toBe("nothing to report\n");
  });

  it("a customer unknown to Stripe is held, not sent: report and --status exit 1 and name it", async () => {
    const w = await workspace();
    const hour = pastHour(2);
    await seed(w.t, {
      events: sessionInHour(SIM_A, ICCID_A, 1, hour, 5000),
      assign: [{ sim: SIM_A, customer: "cus_ghost" }],
    });
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);

    const report = await w.cli(["report", "--json"]);
    expect(report.status).toBe(1);
    expect(JSON.parse(report.stdout)).toMatchObject({
      planned: 0,
      sent: 0,
      failed: 0,
      held: 1,
      held_bytes: { no_subscription: 5000 },
    });
    expect(report.stderr).toContain("usage held, not sent: 5000 bytes (no_subscription)");
    expect(w.emu.events()).toEqual([]);

    const status = await w.cli(["report", "--status"]);
    expect(status.status).toBe(1);
    const held = tableRows(status.stdout.split("held, not sent")[1] ?? "", "customer_id");
    expect(held.map((r) => r.slice(0, 3))).toEqual([["cus_ghost", "no_subscription", "5000"]]);
    expect(held[0]?.[3]).toContain("unknown to Stripe");
    const json = await w.json<{
      held: { customer_id: string; reason: string; bytes: number }[];
    }>(["report", "--status", "--json"]);
    expect(json.held).toEqual([
      expect.objectContaining({ customer_id: "cus_ghost", reason: "no_subscription", bytes: 5000 }),
    ]);
  });

  it("--status after a permanent failure exits 1 and lists the stopped row with its reason", async () => {
    const w = await workspace({
      faults: { refuseCustomers: ["cus_gone"] },
      acceptAnyCustomer: true,
    });
    const hour = pastHour(2);
    await seed(w.t, {
      events: sessionInHour(SIM_A, ICCID_A, 1, hour, 5000),
      assign: [{ sim: SIM_A, customer: "cus_gone" }],
    });
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);
    const report = await w.cli(["report", "--json"]);
    expect(report.status).toBe(1);
    expect(JSON.parse(report.stdout)).toMatchObject({ planned: 1, sent: 0, failed: 1 });

    const identifier = `v1:cus_gone:${hour / 1000}:0`;
    const status = await w.cli(["report", "--status"]);
    expect(status.status).toBe(1);
    expect(status.stdout).toContain(
      "stopped rows (fix the cause, then simmeter report --retry-failed):",
    );
    const stopped = tableRows(status.stdout.split("stopped rows")[1] ?? "", "identifier");
    expect(stopped).toHaveLength(1);
    expect(stopped[0]?.slice(0, 4)).toEqual([
      identifier,
      "cus_gone",
      new Date(hour).toISOString(),
      "5000",
    ]);
    expect(stopped[0]?.[4]).toContain("No such customer: 'cus_gone'");
    const states = tableRows(status.stdout, "state");
    expect(states.map(([state, rows]) => [state, rows])).toEqual([["failed", "1"]]);
  });

  it("with a key Stripe refuses, stops the run, exits 1 with a message about STRIPE_SECRET_KEY and keeps the rows pending", async () => {
    const w = await workspace({ acceptAnyCustomer: true });
    await seed(w.t, {
      events: sessionInHour(SIM_A, ICCID_A, 1, pastHour(2), 900),
      assign: [{ sim: SIM_A, customer: "cus_alpha" }],
    });
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);

    const r = await w.cli(["report"], { STRIPE_SECRET_KEY: "sk_test_wrong" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("stopped:");
    expect(r.stderr).toContain("check STRIPE_SECRET_KEY");
    expect(w.emu.events()).toEqual([]);
    // Nothing was planned: where to stamp needs the subscription periods the key could not read.
    const status = await w.cli(["report", "--status", "--json"]);
    expect(status.status).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ stopped: [], pending: { rows: 0 } });

    const retry = await w.cli(["report", "--json"]);
    expect(retry.status).toBe(0);
    expect(w.emu.events().map((e) => e.value)).toEqual([900]);
  });

  const noKeyCommands = [
    { command: "report" },
    { command: "stripe setup" },
    { command: "reconcile" },
  ];

  // SQLite: "touches nothing" is that the ledger file is not even created (a path with no file).
  it.runIf(backend === "sqlite").each(noKeyCommands)(
    "without STRIPE_SECRET_KEY, `simmeter $command` exits 2 with a message naming STRIPE_SECRET_KEY and touches nothing",
    async ({ command }) => {
      const w = await workspace();
      const r = await w.cli(command.split(" "), {
        STRIPE_SECRET_KEY: undefined,
        DATABASE_PATH: w.dbPath,
      });
      expect(r.status).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("STRIPE_SECRET_KEY is required");
      expect(existsSync(w.dbPath)).toBe(false);
      expect(w.emu.stats().requests).toBe(0);
    },
  );

  // PostgreSQL: the database exists (migrated); "touches nothing" is that no row of it changed.
  it.runIf(backend === "postgres").each(noKeyCommands)(
    "without STRIPE_SECRET_KEY, `simmeter $command` exits 2 with a message naming STRIPE_SECRET_KEY and touches nothing (PostgreSQL)",
    async ({ command }) => {
      const w = await workspace();
      const before = await tableContents(w.t);
      const r = await w.cli(command.split(" "), { STRIPE_SECRET_KEY: undefined });
      expect(r.status).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("STRIPE_SECRET_KEY is required");
      expect(await tableContents(w.t)).toEqual(before);
      expect(w.emu.stats().requests).toBe(0);
    },
  );
});
