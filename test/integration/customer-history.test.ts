import { Redis } from "ioredis";
import type Stripe from "stripe";
import { afterEach, describe, expect, inject, it } from "vitest";
import { type StripeEmulator, startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { assignCustomer, previewMoves } from "../../src/customers/customers.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { type ReporterSettings, runReport } from "../../src/reporting/reporter.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { type TestIngest, testIngest } from "../helpers/ledger.ts";
import { runCli } from "../helpers/process.ts";
import { EVENT_NAME, normalise } from "../helpers/reporting.ts";
import { customerAt } from "../helpers/seed.ts";

// An hour's customer is what was true during that hour (src/customers/resolve.ts,
// docs/adr/0005-customer-history.md): through the real ingest, the ledger of the vitest
// project's backend (test/helpers/ledger.ts), the reporter, the `stripe` SDK and the Stripe
// emulator. Every test here fails on the resolver of 4cf42c0, which billed every hour by the
// SIM's current fleet and gave pre-mapping usage to the SIM's earliest own assignment, and whose
// assignments never refused to move counted usage.

const T = (iso: string) => Date.parse(iso);
const NOW = T("2026-11-23T13:30:00Z");
const EARLY = T("2026-11-01T00:00:00Z");
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const SIM_A = `HS${"a".repeat(32)}`;
const SIM_B = `HS${"b".repeat(32)}`;
const ICCID: Record<string, string> = {
  [SIM_A]: "89883070000005381783",
  [SIM_B]: "89883070000005381784",
};
const F0 = `HF${"0".repeat(32)}`;
const F1 = `HF${"1".repeat(32)}`;
const F2 = `HF${"2".repeat(32)}`;
const iso = (h: string) => `2026-11-23T${h}:00.000Z`;

/**
 * reportingRig (test/helpers/reporting.ts) on either backend: the project's ledger (a file on
 * SQLite, so the CLI can open it), a real Redis, the Stripe emulator and the real SDK, one clock.
 */
type Rig = {
  t: TestIngest;
  emu: StripeEmulator;
  stripe: Stripe;
  now: { value: number };
  /** what a spawned CLI needs to open this ledger */
  env: Record<string, string | undefined>;
  ingest: (events: unknown[]) => Promise<void>;
  report: () => ReturnType<typeof runReport>;
  /** runs reports until nothing is pending (retries happen across runs, like the scheduler does) */
  reportUntilDone: (maxRuns?: number) => Promise<number>;
  close: () => Promise<void>;
};

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});
let n = 0;
/** One data session of `sim` that ends at `at` having used `bytes`; `fleet` null omits fleet_sid. */
function used(sim: string, fleet: string | null, at: string, bytes: number) {
  n++;
  const end = T(at);
  const id = n.toString(16).padStart(32, "0");
  return buildCloudEvent({
    eventSid: `EZ${id}`,
    kind: "data-session.ended",
    accountSid: ACCOUNT,
    simSid: sim,
    iccid: ICCID[sim] as string,
    fleetSid: fleet,
    timestampMs: end,
    sessionSid: `PI${id}`,
    sessionStartMs: end - 10 * 60_000,
    sessionEndMs: end,
    windowStartMs: end - 10 * 60_000,
    windowEndMs: end,
    windowDown: bytes,
    cumulativeDown: bytes,
  });
}

async function rigAt(start = NOW): Promise<Rig> {
  const now = { value: start };
  const t = await testIngest({}, () => now.value, { file: true });
  const emu = await startStripeEmulator({
    acceptAnyCustomer: true,
    autoSubscribe: true,
    now: () => now.value,
  });
  const timeoutMs = 5000;
  const stripe = createStripe({
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    STRIPE_TIMEOUT_MS: timeoutMs,
  });
  await ensureMeter(stripe, EVENT_NAME);
  const redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
  const settings: ReporterSettings = {
    eventName: EVENT_NAME,
    graceSeconds: 3600,
    concurrency: 4,
    timeoutMs,
    attemptsPerRun: 6,
    redisPrefix: `rep${Math.random().toString(36).slice(2, 8)}`,
  };
  const logger = createLogger("silent");
  const r: Rig = {
    t,
    emu,
    stripe,
    now,
    env: { ...t.env, LOG_LEVEL: "warn" },
    ingest: async (events) => {
      await t.ingest(events, "replay");
    },
    report: () =>
      runReport({ ledger: t.ledger, stripe, redis, logger, settings, now: () => now.value }),
    reportUntilDone: async (maxRuns = 20) => {
      for (let run = 1; run <= maxRuns; run++) {
        const s = await r.report();
        if (s.fatal) throw new Error(s.fatal);
        if (s.stillPending === 0 && s.lockedCustomers === 0) return run;
      }
      throw new Error(`still pending after ${maxRuns} runs`);
    },
    close: async () => {
      await emu.close();
      redis.disconnect();
      await t.close();
    },
  };
  rig = r;
  return r;
}

async function assign(
  r: Rig,
  targetType: "sim" | "iccid" | "fleet",
  targetId: string,
  customerId: string,
  effectiveFrom: number,
) {
  return await assignCustomer({
    ledger: r.t.ledger,
    now: r.now.value,
    input: { targetType, targetId, customerId, effectiveFrom },
  });
}

/** What Stripe holds: customer → hour → bytes. */
const inStripe = (r: Rig) => normalise(r.emu.totalsByCustomerHour(EVENT_NAME));
/** What the customer history says is owed (ledger.customers.usageOwned): customer → hour → bytes. */
async function owed(r: Rig): Promise<Record<string, Record<string, number>>> {
  const out = new Map<string, Map<number, number>>();
  for (const u of await r.t.ledger.customers.usageOwned(0, T("2100-01-01T00:00:00Z"))) {
    if (!u.customer) continue;
    const m = out.get(u.customer) ?? new Map<number, number>();
    m.set(u.hour / 1000, (m.get(u.hour / 1000) ?? 0) + u.bytes);
    out.set(u.customer, m);
  }
  return normalise(out);
}
const customerOf = (r: Rig, sim: string, hour: string) => customerAt(r.t, sim, T(iso(hour)));
const totalUsage = async (r: Rig) =>
  (await r.t.sql<{ b: number }>("select coalesce(sum(bytes), 0) as b from usage_hourly"))[0]?.b;
const sum = (m: Record<string, Record<string, number>>) =>
  Object.values(m).reduce((s, h) => s + Object.values(h).reduce((a, b) => a + b, 0), 0);

/**
 * Every counted byte is in Stripe (or planned for it by the next run: a dry-run plan shows it),
 * or listed as unmapped (ledger.reads.unmapped): never neither, never both.
 */
async function expectBilledOrListed(r: Rig) {
  const billed = new Map<string, Map<number, number>>();
  for (const [c, hours] of r.emu.totalsByCustomerHour(EVENT_NAME)) billed.set(c, new Map(hours));
  const plan = await r.t.ledger.plan({
    now: r.now.value,
    settings: { graceSeconds: 3600 },
    dryRun: true,
  });
  for (const row of plan.rows) {
    const m = billed.get(row.customerId) ?? new Map<number, number>();
    m.set(row.hour / 1000, (m.get(row.hour / 1000) ?? 0) + row.value);
    billed.set(row.customerId, m);
  }
  const soon = normalise(billed);
  expect(soon, "in Stripe or planned for it, by customer and hour").toEqual(await owed(r));
  const listed = (await r.t.ledger.reads.unmapped()).reduce((s, u) => s + u.bytes, 0);
  expect(sum(soon) + listed, "billed + listed as unmapped = all counted usage").toBe(
    await totalUsage(r),
  );
}

describe("an hour's customer is decided by what was true during that hour", () => {
  it("a fleet move does not move billed hours to the new fleet's customer", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    await r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.reportUntilDone();
    // The SIM moves to F2 (another customer's fleet) and uses data there.
    await r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(await owed(r)).toEqual(expected);
    expect(await customerOf(r, SIM_A, "09:00")).toBe("cus_a");
    expect(await customerOf(r, SIM_A, "10:00")).toBe("cus_a");
    // An hour without events is the latest observed fleet's: the SIM was still in F1 at 11:00.
    expect(await customerOf(r, SIM_A, "11:00")).toBe("cus_a");
    expect(await customerOf(r, SIM_A, "12:00")).toBe("cus_b");
  });

  it("a fleet move does not move billed hours to the new fleet's customer, also when the new fleet is assigned only after the move", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.reportUntilDone();
    await r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    const moved = await r.report();
    expect(moved.unmappedBytes, "F2 has no customer yet").toBe(4000);
    expect((await r.t.ledger.reads.unmapped()).map((u) => [u.simSid, u.bytes])).toEqual([
      [SIM_A, 4000],
    ]);
    // F2 is assigned afterwards, even from long before the move: that bills only what the SIM
    // used in F2, so it is no re-bill and is not refused.
    const f2 = {
      ledger: r.t.ledger,
      now: r.now.value,
      input: { targetType: "fleet", targetId: F2, customerId: "cus_b", effectiveFrom: EARLY },
    } as const;
    expect(await previewMoves(r.t.ledger, [f2.input], f2.now)).toEqual([]);
    await assignCustomer(f2);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(await owed(r)).toEqual(expected);
    expect(await r.t.ledger.reads.unmapped()).toEqual([]);
    // Nothing was ever taken back from cus_a: no negative event.
    expect(r.emu.events().filter((e) => e.value < 0)).toEqual([]);
  });

  it("a fleet move does not move billed hours to the new fleet's customer, also when another SIM's late reading re-plans one of the old hours", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    await r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.ingest([used(SIM_B, F1, iso("10:40"), 700)]);
    await r.reportUntilDone();
    await r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    await r.reportUntilDone();
    // Only the other SIM (still in F1) reports late usage for 09:00: that hour is re-planned.
    await r.ingest([used(SIM_B, F1, iso("09:45"), 500)]);
    const dirty = await r.t.sql<{ hour: number }>("select hour from report_dirty_hours");
    expect(dirty.map((d) => d.hour)).toEqual([T(iso("09:00"))]);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1500, [iso("10:00")]: 2700 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(await owed(r)).toEqual(expected);
    expect(await customerOf(r, SIM_A, "09:00")).toBe("cus_a");
    expect(r.emu.events().filter((e) => e.value < 0)).toEqual([]);
  });

  it("following the README's old workaround for a fleet move (an own assignment from the move) moves nothing", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    await r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.reportUntilDone();
    await r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    await r.reportUntilDone();
    const sent = r.emu.events().length;
    // The old README: "give the SIM its own assignment from the move (customers assign --sim … --from …)".
    const cli = await runCli(
      ["customers", "assign", SIM_A, "--sim", "--customer", "cus_b", "--from", iso("12:00")],
      r.env,
    );
    expect(cli.stderr).toBe("");
    expect(cli.status).toBe(0);
    expect(cli.stdout).toBe(`sim ${SIM_A} → cus_b from ${iso("12:00")}\n`);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(await owed(r)).toEqual(expected);
    expect(r.emu.events().length, "meter events sent after the workaround").toBe(sent);
  });

  it("a SIM assignment dated in the future (to cus_b from next month) does not re-bill this month's usage from cus_a", async () => {
    const r = await rigAt(T("2026-11-23T10:30:00Z"));
    // The fleet is mapped from 11:00; the SIM's 09:00 usage went to cus_a as its first customer.
    await assign(r, "fleet", F1, "cus_a", r.now.value);
    await r.ingest([used(SIM_A, F1, iso("09:30"), 1000)]);
    r.now.value = T("2026-11-23T12:10:00Z");
    await r.ingest([used(SIM_A, F1, iso("11:30"), 2000)]);
    await r.reportUntilDone();
    const expected = { cus_a: { [iso("09:00")]: 1000, [iso("11:00")]: 2000 } };
    expect(inStripe(r)).toEqual(expected);
    const future = {
      ledger: r.t.ledger,
      now: r.now.value,
      input: {
        targetType: "sim",
        targetId: SIM_A,
        customerId: "cus_b",
        effectiveFrom: T("2026-12-01T00:00:00Z"),
      },
    } as const;
    expect(await previewMoves(r.t.ledger, [future.input], future.now)).toEqual([]);
    await assignCustomer(future); // no rebill needed: it moves nothing
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual(expected);
    expect(await owed(r)).toEqual(expected);
    expect(await customerOf(r, SIM_A, "09:00")).toBe("cus_a");
    expect(await customerAt(r.t, SIM_A, T("2026-12-01T00:00:00Z"))).toBe("cus_b");
  });

  it.each([
    ["sent no fleet_sid", null],
    ["was in a fleet without a customer", F0],
  ])(
    "usage of a SIM from before it joined an already-assigned fleet is billed to that fleet's customer, and is listed as unmapped until then (the SIM %s before)",
    async (_how, before) => {
      const r = await rigAt();
      await assign(r, "fleet", F1, "cus_a", EARLY);
      await r.ingest([
        used(SIM_A, before, iso("09:30"), 1000),
        used(SIM_A, before, iso("10:30"), 2000),
      ]);
      const first = await r.report();
      expect(first.unmappedBytes).toBe(3000);
      expect(inStripe(r)).toEqual({});
      expect(await r.t.ledger.reads.unmapped()).toEqual([
        {
          simSid: SIM_A,
          iccid: ICCID[SIM_A],
          fleetSid: before,
          bytes: 3000,
          firstHour: iso("09:00"),
          lastHour: iso("10:00"),
        },
      ]);
      await expectBilledOrListed(r);
      // It joins F1 (cus_a's since Nov 1): its first coverage, so its earlier usage is cus_a's.
      await r.ingest([used(SIM_A, F1, iso("12:30"), 4000)]);
      await expectBilledOrListed(r);
      await r.reportUntilDone();
      await expectBilledOrListed(r);
      expect(inStripe(r)).toEqual({
        cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000, [iso("12:00")]: 4000 },
      });
      expect(await r.t.ledger.reads.unmapped()).toEqual([]);
    },
  );

  it("an hour in which a SIM moved back to the fleet it had left the hour before goes with the fleet it came from", async () => {
    // Fleet SIDs ordered so that "the smallest SID" is the wrong answer for 06:00.
    const FA = `HF${"b".repeat(32)}`;
    const FB = `HF${"3".repeat(32)}`;
    const r = await rigAt();
    await assign(r, "fleet", FA, "cus_a", EARLY);
    await assign(r, "fleet", FB, "cus_b", EARLY);
    // 05:10 in FB, moves to FA at 05:40; 06:10 in FA, moves back to FB at 06:40.
    await r.ingest([
      used(SIM_A, FB, iso("05:10"), 1),
      used(SIM_A, FA, iso("05:40"), 2),
      used(SIM_A, FA, iso("06:10"), 100),
      used(SIM_A, FB, iso("06:40"), 200),
    ]);
    await r.reportUntilDone();
    expect(await customerOf(r, SIM_A, "05:00"), "05:00 began in FB").toBe("cus_b");
    expect(await customerOf(r, SIM_A, "06:00"), "06:00 began in FA").toBe("cus_a");
    expect(await customerOf(r, SIM_A, "07:00"), "from 06:40 the SIM is in FB").toBe("cus_b");
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("06:00")]: 300 },
      cus_b: { [iso("05:00")]: 3 },
    });
  });

  it("a move back to the fleet that a late event had named re-plans the hours after the move", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    // F1 at 09:30, F2 at 10:30, back in F1 from 11:10. Delivered: 10:30, then 09:30 (late), then
    // a 12:30 event without fleet_sid (its hour is the latest observed fleet's: F2 so far).
    await r.ingest([used(SIM_A, F2, iso("10:30"), 2000)]);
    await r.ingest([used(SIM_A, F1, iso("09:30"), 1000)]);
    await r.ingest([used(SIM_A, null, iso("12:30"), 500)]);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000 },
      cus_b: { [iso("10:00")]: 2000, [iso("12:00")]: 500 },
    });
    // The 11:10 event (late too) shows the SIM back in F1: 12:00 was F1's hour, so cus_a's.
    await r.ingest([used(SIM_A, F1, iso("11:10"), 300)]);
    expect(await customerOf(r, SIM_A, "12:00")).toBe("cus_a");
    await expectBilledOrListed(r);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000, [iso("11:00")]: 300, [iso("12:00")]: 500 },
      cus_b: { [iso("10:00")]: 2000 },
    });
  });

  it("a backdated assignment that would move counted usage is refused without --rebill and names what moves; with --rebill exactly that usage moves", async () => {
    const r = await rigAt();
    await assign(r, "sim", SIM_A, "cus_a", EARLY);
    await r.ingest([
      used(SIM_A, F1, iso("09:30"), 1000),
      used(SIM_A, F1, iso("10:30"), 2000),
      used(SIM_A, F1, iso("11:30"), 3000),
    ]);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000, [iso("11:00")]: 3000 },
    });
    const sentBefore = r.emu.events().length;
    const env = r.env;
    const args = ["customers", "assign", SIM_A, "--sim", "--customer", "cus_b"];
    const what = `${SIM_A} cus_a → cus_b: 5000 bytes in 2 hour(s), ${iso("10:00")} to ${iso("11:00")}`;

    const refused = await runCli([...args, "--from", "2026-11-23T10:00:00"], env);
    expect(refused.status).toBe(1);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toContain("would move 5000 counted bytes in 2 SIM-hour(s)");
    expect(refused.stderr).toContain(what);
    expect(refused.stderr).toContain("--rebill");
    expect((await r.t.ledger.assignments.list()).map((a) => a.customerId)).toEqual(["cus_a"]);
    await r.reportUntilDone();
    expect(r.emu.events().length, "meter events sent after the refusal").toBe(sentBefore);

    const rebilled = await runCli([...args, "--from", "2026-11-23T10:00:00", "--rebill"], env);
    expect(rebilled.stderr).toBe("");
    expect(rebilled.status).toBe(0);
    expect(rebilled.stdout).toBe(`re-billed: ${what}\nsim ${SIM_A} → cus_b from ${iso("10:00")}\n`);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000 },
      cus_b: { [iso("10:00")]: 2000, [iso("11:00")]: 3000 },
    });
    // Exactly that usage moved: one correction per moved hour and customer, nothing else sent.
    const after = r.emu
      .events()
      .slice(sentBefore)
      .map((e) => [e.customer, new Date(e.timestamp * 1000).toISOString(), e.value])
      .sort();
    expect(after).toEqual(
      [
        ["cus_a", iso("10:00"), -2000],
        ["cus_a", iso("11:00"), -3000],
        ["cus_b", iso("10:00"), 2000],
        ["cus_b", iso("11:00"), 3000],
      ].sort(),
    );
  });
});
