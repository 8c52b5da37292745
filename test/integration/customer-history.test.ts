import { afterEach, describe, expect, inject, it } from "vitest";
import {
  assignCustomer,
  customerResolver,
  listAssignments,
  previewMoves,
  unmappedUsage,
} from "../../src/customers/customers.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { planReports } from "../../src/reporting/outbox.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { runCli } from "../helpers/process.ts";
import {
  countedByCustomerHour,
  EVENT_NAME,
  normalise,
  type ReportingRig,
  reportingRig,
} from "../helpers/reporting.ts";

// An hour's customer is what was true during that hour (src/customers/resolve.ts,
// docs/adr/0005-customer-history.md): through the real ingest, SQLite, the reporter, the `stripe`
// SDK and the Stripe emulator. Every test here fails on the resolver of 4cf42c0, which billed
// every hour by the SIM's current fleet and gave pre-mapping usage to the SIM's earliest own
// assignment, and whose assignments never refused to move counted usage.

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

let rig: ReportingRig | undefined;
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

async function rigAt(now = NOW): Promise<ReportingRig> {
  rig = await reportingRig({ redisUrl: inject("redisUrl"), now });
  return rig;
}

async function assign(
  r: ReportingRig,
  targetType: "sim" | "iccid" | "fleet",
  targetId: string,
  customerId: string,
  effectiveFrom: number,
) {
  return await assignCustomer({
    ledger: sqliteLedger(r.db),
    now: r.now.value,
    input: { targetType, targetId, customerId, effectiveFrom },
  });
}

/** What Stripe holds: customer → hour → bytes. */
const inStripe = (r: ReportingRig) => normalise(r.emu.totalsByCustomerHour(EVENT_NAME));
/** What the resolver says is owed: customer → hour → bytes. */
const owed = (r: ReportingRig) => {
  const resolver = customerResolver(r.db);
  return countedByCustomerHour(r.db, (s, h) => resolver.resolve(s, h));
};
const customerOf = (r: ReportingRig, sim: string, hour: string) =>
  customerResolver(r.db).resolve(sim, T(iso(hour)));
const totalUsage = (r: ReportingRig) =>
  (
    r.db.$client.prepare("select coalesce(sum(bytes), 0) as b from usage_hourly").get() as {
      b: number;
    }
  ).b;
const sum = (m: Record<string, Record<string, number>>) =>
  Object.values(m).reduce((s, h) => s + Object.values(h).reduce((a, b) => a + b, 0), 0);

/**
 * Every counted byte is in Stripe (or planned for it by the next run: a dry-run plan shows it),
 * or listed by unmappedUsage: never neither, never both.
 */
function expectBilledOrListed(r: ReportingRig) {
  const billed = new Map<string, Map<number, number>>();
  for (const [c, hours] of r.emu.totalsByCustomerHour(EVENT_NAME)) billed.set(c, new Map(hours));
  for (const row of planReports({
    db: r.db,
    now: r.now.value,
    settings: { graceSeconds: 3600 },
    dryRun: true,
  }).rows) {
    const m = billed.get(row.customerId) ?? new Map<number, number>();
    m.set(row.hour / 1000, (m.get(row.hour / 1000) ?? 0) + row.value);
    billed.set(row.customerId, m);
  }
  const soon = normalise(billed);
  expect(soon, "in Stripe or planned for it, by customer and hour").toEqual(owed(r));
  const listed = unmappedUsage(r.db).reduce((s, u) => s + u.bytes, 0);
  expect(sum(soon) + listed, "billed + listed as unmapped = all counted usage").toBe(totalUsage(r));
}

describe("an hour's customer is decided by what was true during that hour", () => {
  it("a fleet move does not move billed hours to the new fleet's customer", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.reportUntilDone();
    // The SIM moves to F2 (another customer's fleet) and uses data there.
    r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(owed(r)).toEqual(expected);
    expect(customerOf(r, SIM_A, "09:00")).toBe("cus_a");
    expect(customerOf(r, SIM_A, "10:00")).toBe("cus_a");
    // An hour without events is the latest observed fleet's: the SIM was still in F1 at 11:00.
    expect(customerOf(r, SIM_A, "11:00")).toBe("cus_a");
    expect(customerOf(r, SIM_A, "12:00")).toBe("cus_b");
  });

  it("a fleet move does not move billed hours to the new fleet's customer, also when the new fleet is assigned only after the move", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.reportUntilDone();
    r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    const moved = await r.report();
    expect(moved.unmappedBytes, "F2 has no customer yet").toBe(4000);
    expect(unmappedUsage(r.db).map((u) => [u.simSid, u.bytes])).toEqual([[SIM_A, 4000]]);
    // F2 is assigned afterwards, even from long before the move: that bills only what the SIM
    // used in F2, so it is no re-bill and is not refused.
    const f2 = {
      ledger: sqliteLedger(r.db),
      now: r.now.value,
      input: { targetType: "fleet", targetId: F2, customerId: "cus_b", effectiveFrom: EARLY },
    } as const;
    expect(await previewMoves(sqliteLedger(r.db), [f2.input], f2.now)).toEqual([]);
    await assignCustomer(f2);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(owed(r)).toEqual(expected);
    expect(unmappedUsage(r.db)).toEqual([]);
    // Nothing was ever taken back from cus_a: no negative event.
    expect(r.emu.events().filter((e) => e.value < 0)).toEqual([]);
  });

  it("a fleet move does not move billed hours to the new fleet's customer, also when another SIM's late reading re-plans one of the old hours", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    r.ingest([used(SIM_B, F1, iso("10:40"), 700)]);
    await r.reportUntilDone();
    r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    await r.reportUntilDone();
    // Only the other SIM (still in F1) reports late usage for 09:00: that hour is re-planned.
    r.ingest([used(SIM_B, F1, iso("09:45"), 500)]);
    const dirty = r.db.$client.prepare("select hour from report_dirty_hours").pluck().all();
    expect(dirty).toEqual([T(iso("09:00"))]);
    await r.reportUntilDone();
    const expected = {
      cus_a: { [iso("09:00")]: 1500, [iso("10:00")]: 2700 },
      cus_b: { [iso("12:00")]: 4000 },
    };
    expect(inStripe(r)).toEqual(expected);
    expect(owed(r)).toEqual(expected);
    expect(customerOf(r, SIM_A, "09:00")).toBe("cus_a");
    expect(r.emu.events().filter((e) => e.value < 0)).toEqual([]);
  });

  it("following the README's old workaround for a fleet move (an own assignment from the move) moves nothing", async () => {
    const r = await rigAt();
    await assign(r, "fleet", F1, "cus_a", EARLY);
    await assign(r, "fleet", F2, "cus_b", EARLY);
    r.ingest([used(SIM_A, F1, iso("09:30"), 1000), used(SIM_A, F1, iso("10:30"), 2000)]);
    await r.reportUntilDone();
    r.ingest([used(SIM_A, F2, iso("12:30"), 4000)]);
    await r.reportUntilDone();
    const sent = r.emu.events().length;
    // The old README: "give the SIM its own assignment from the move (customers assign --sim … --from …)".
    const cli = await runCli(
      ["customers", "assign", SIM_A, "--sim", "--customer", "cus_b", "--from", iso("12:00")],
      { DATABASE_PATH: r.dbPath, LOG_LEVEL: "warn" },
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
    expect(owed(r)).toEqual(expected);
    expect(r.emu.events().length, "meter events sent after the workaround").toBe(sent);
  });

  it("a SIM assignment dated in the future (to cus_b from next month) does not re-bill this month's usage from cus_a", async () => {
    const r = await rigAt(T("2026-11-23T10:30:00Z"));
    // The fleet is mapped from 11:00; the SIM's 09:00 usage went to cus_a as its first customer.
    await assign(r, "fleet", F1, "cus_a", r.now.value);
    r.ingest([used(SIM_A, F1, iso("09:30"), 1000)]);
    r.now.value = T("2026-11-23T12:10:00Z");
    r.ingest([used(SIM_A, F1, iso("11:30"), 2000)]);
    await r.reportUntilDone();
    const expected = { cus_a: { [iso("09:00")]: 1000, [iso("11:00")]: 2000 } };
    expect(inStripe(r)).toEqual(expected);
    const future = {
      ledger: sqliteLedger(r.db),
      now: r.now.value,
      input: {
        targetType: "sim",
        targetId: SIM_A,
        customerId: "cus_b",
        effectiveFrom: T("2026-12-01T00:00:00Z"),
      },
    } as const;
    expect(await previewMoves(sqliteLedger(r.db), [future.input], future.now)).toEqual([]);
    await assignCustomer(future); // no rebill needed: it moves nothing
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual(expected);
    expect(owed(r)).toEqual(expected);
    expect(customerOf(r, SIM_A, "09:00")).toBe("cus_a");
    expect(customerResolver(r.db).resolve(SIM_A, T("2026-12-01T00:00:00Z"))).toBe("cus_b");
  });

  it.each([
    ["sent no fleet_sid", null],
    ["was in a fleet without a customer", F0],
  ])(
    "usage of a SIM from before it joined an already-assigned fleet is billed to that fleet's customer, and is listed as unmapped until then (the SIM %s before)",
    async (_how, before) => {
      const r = await rigAt();
      await assign(r, "fleet", F1, "cus_a", EARLY);
      r.ingest([used(SIM_A, before, iso("09:30"), 1000), used(SIM_A, before, iso("10:30"), 2000)]);
      const first = await r.report();
      expect(first.unmappedBytes).toBe(3000);
      expect(inStripe(r)).toEqual({});
      expect(unmappedUsage(r.db)).toEqual([
        {
          simSid: SIM_A,
          iccid: ICCID[SIM_A],
          fleetSid: before,
          bytes: 3000,
          firstHour: iso("09:00"),
          lastHour: iso("10:00"),
        },
      ]);
      expectBilledOrListed(r);
      // It joins F1 (cus_a's since Nov 1): its first coverage, so its earlier usage is cus_a's.
      r.ingest([used(SIM_A, F1, iso("12:30"), 4000)]);
      expectBilledOrListed(r);
      await r.reportUntilDone();
      expectBilledOrListed(r);
      expect(inStripe(r)).toEqual({
        cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000, [iso("12:00")]: 4000 },
      });
      expect(unmappedUsage(r.db)).toEqual([]);
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
    r.ingest([
      used(SIM_A, FB, iso("05:10"), 1),
      used(SIM_A, FA, iso("05:40"), 2),
      used(SIM_A, FA, iso("06:10"), 100),
      used(SIM_A, FB, iso("06:40"), 200),
    ]);
    await r.reportUntilDone();
    expect(customerOf(r, SIM_A, "05:00"), "05:00 began in FB").toBe("cus_b");
    expect(customerOf(r, SIM_A, "06:00"), "06:00 began in FA").toBe("cus_a");
    expect(customerOf(r, SIM_A, "07:00"), "from 06:40 the SIM is in FB").toBe("cus_b");
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
    r.ingest([used(SIM_A, F2, iso("10:30"), 2000)]);
    r.ingest([used(SIM_A, F1, iso("09:30"), 1000)]);
    r.ingest([used(SIM_A, null, iso("12:30"), 500)]);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000 },
      cus_b: { [iso("10:00")]: 2000, [iso("12:00")]: 500 },
    });
    // The 11:10 event (late too) shows the SIM back in F1: 12:00 was F1's hour, so cus_a's.
    r.ingest([used(SIM_A, F1, iso("11:10"), 300)]);
    expect(customerOf(r, SIM_A, "12:00")).toBe("cus_a");
    expectBilledOrListed(r);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000, [iso("11:00")]: 300, [iso("12:00")]: 500 },
      cus_b: { [iso("10:00")]: 2000 },
    });
  });

  it("a backdated assignment that would move counted usage is refused without --rebill and names what moves; with --rebill exactly that usage moves", async () => {
    const r = await rigAt();
    await assign(r, "sim", SIM_A, "cus_a", EARLY);
    r.ingest([
      used(SIM_A, F1, iso("09:30"), 1000),
      used(SIM_A, F1, iso("10:30"), 2000),
      used(SIM_A, F1, iso("11:30"), 3000),
    ]);
    await r.reportUntilDone();
    expect(inStripe(r)).toEqual({
      cus_a: { [iso("09:00")]: 1000, [iso("10:00")]: 2000, [iso("11:00")]: 3000 },
    });
    const sentBefore = r.emu.events().length;
    const env = { DATABASE_PATH: r.dbPath, LOG_LEVEL: "warn" };
    const args = ["customers", "assign", SIM_A, "--sim", "--customer", "cus_b"];
    const what = `${SIM_A} cus_a → cus_b: 5000 bytes in 2 hour(s), ${iso("10:00")} to ${iso("11:00")}`;

    const refused = await runCli([...args, "--from", "2026-11-23T10:00:00"], env);
    expect(refused.status).toBe(1);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toContain("would move 5000 counted bytes in 2 SIM-hour(s)");
    expect(refused.stderr).toContain(what);
    expect(refused.stderr).toContain("--rebill");
    expect(listAssignments(r.db).map((a) => a.customerId)).toEqual(["cus_a"]);
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
