import { describe, expect, it } from "vitest";
import {
  type AssignInput,
  assignCustomer,
  InputError,
  importCustomersCsv,
} from "../../src/customers/customers.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { openTestLedger, testIngest } from "../helpers/ledger.ts";
import { customerAt } from "../helpers/seed.ts";

// Every test runs on the backend of its vitest project (test/helpers/ledger.ts).

const T = (iso: string) => Date.parse(iso);
const NOW = T("2026-11-20T10:30:00Z");
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const SIM = "HS0123456789abcdef0123456789abcdef";
const SIM2 = "HSfedcba9876543210fedcba9876543210";
const OTHER_SIM = "HS00000000000000000000000000000099";
const ICCID = "89883070000005381783";
const ICCID2 = "89883070000005381784";
const FLEET = "HF0123456789abcdef0123456789abcdef";
const OTHER_FLEET = "HF00000000000000000000000000000099";

type Row = { targetType: string; targetId: string; customerId: string; from: string };
const rows = async (ledger: Ledger): Promise<Row[]> =>
  (await ledger.assignments.list()).map((r) => ({
    targetType: r.targetType,
    targetId: r.targetId,
    customerId: r.customerId,
    from: new Date(r.effectiveFrom).toISOString(),
  }));

describe("assignCustomer", () => {
  it.each<[string, AssignInput, string]>([
    [
      "a malformed SIM SID",
      { targetType: "sim", targetId: "HS123", customerId: "cus_A1" },
      '"HS123" is not a Super SIM SID',
    ],
    [
      "a Fleet SID given as a SIM",
      { targetType: "sim", targetId: FLEET, customerId: "cus_A1" },
      `"${FLEET}" is not a Super SIM SID`,
    ],
    [
      "a SIM SID given as a fleet",
      { targetType: "fleet", targetId: SIM, customerId: "cus_A1" },
      `"${SIM}" is not a Fleet SID`,
    ],
    [
      "a too short ICCID",
      { targetType: "iccid", targetId: "8988307", customerId: "cus_A1" },
      '"8988307" is not an ICCID',
    ],
    [
      "a customer id without the cus_ prefix",
      { targetType: "sim", targetId: SIM, customerId: "cust_42" },
      '"cust_42" is not a Stripe customer id',
    ],
    [
      "an empty customer id",
      { targetType: "sim", targetId: SIM, customerId: "" },
      '"" is not a Stripe customer id',
    ],
    [
      "an invalid effective time",
      { targetType: "sim", targetId: SIM, customerId: "cus_A1", effectiveFrom: Number.NaN },
      "effective time is not a valid time",
    ],
  ])(
    "rejects %s with a message naming the value, and stores nothing",
    async (_what, input, message) => {
      const { ledger } = await openTestLedger();
      let thrown: unknown;
      try {
        await assignCustomer({ ledger, input, now: NOW });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(InputError);
      expect((thrown as Error).message).toContain(message);
      expect(await ledger.assignments.list()).toEqual([]);
    },
  );

  it("stores a valid assignment effective from the next whole hour after now", async () => {
    const { ledger } = await openTestLedger();
    const { assignment: a } = await assignCustomer({
      ledger,
      input: { targetType: "sim", targetId: SIM, customerId: "cus_A1" },
      now: NOW,
    });
    expect(a).toMatchObject({
      targetType: "sim",
      targetId: SIM,
      customerId: "cus_A1",
      effectiveFrom: T("2026-11-20T11:00:00Z"),
      createdAt: NOW,
    });
    expect(await ledger.assignments.list()).toEqual([a]);
  });

  it("keeps an effective time that is already on the hour", async () => {
    const { ledger } = await openTestLedger();
    const { assignment: a } = await assignCustomer({
      ledger,
      input: {
        targetType: "fleet",
        targetId: FLEET,
        customerId: "cus_A1",
        effectiveFrom: T("2026-11-01T00:00:00Z"),
      },
      now: NOW,
    });
    expect(a.effectiveFrom).toBe(T("2026-11-01T00:00:00Z"));
  });
});

describe("importCustomersCsv", () => {
  it.each<[string, string, Row[]]>([
    [
      "SIM SIDs",
      `sim_sid,stripe_customer_id\n${SIM},cus_A1\n${SIM2},cus_B2\n`,
      [
        {
          targetType: "sim",
          targetId: SIM,
          customerId: "cus_A1",
          from: "2026-11-20T11:00:00.000Z",
        },
        {
          targetType: "sim",
          targetId: SIM2,
          customerId: "cus_B2",
          from: "2026-11-20T11:00:00.000Z",
        },
      ],
    ],
    [
      "ICCIDs",
      `sim_iccid,stripe_customer_id\n${ICCID},cus_A1\n${ICCID2},cus_B2\n`,
      [
        {
          targetType: "iccid",
          targetId: ICCID,
          customerId: "cus_A1",
          from: "2026-11-20T11:00:00.000Z",
        },
        {
          targetType: "iccid",
          targetId: ICCID2,
          customerId: "cus_B2",
          from: "2026-11-20T11:00:00.000Z",
        },
      ],
    ],
    [
      "Fleet SIDs",
      `fleet_sid,stripe_customer_id\n${FLEET},cus_A1\n`,
      [
        {
          targetType: "fleet",
          targetId: FLEET,
          customerId: "cus_A1",
          from: "2026-11-20T11:00:00.000Z",
        },
      ],
    ],
    [
      "effective times (rounded up to the hour; a blank one means now)",
      [
        "sim_sid,stripe_customer_id,effective_from",
        `${SIM},cus_A1,2026-11-01T00:00:00Z`,
        `${SIM},cus_B2,2026-11-10T08:15:00Z`,
        `${SIM2},cus_A1,`,
      ].join("\n"),
      [
        {
          targetType: "sim",
          targetId: SIM,
          customerId: "cus_A1",
          from: "2026-11-01T00:00:00.000Z",
        },
        {
          targetType: "sim",
          targetId: SIM,
          customerId: "cus_B2",
          from: "2026-11-10T09:00:00.000Z",
        },
        {
          targetType: "sim",
          targetId: SIM2,
          customerId: "cus_A1",
          from: "2026-11-20T11:00:00.000Z",
        },
      ],
    ],
    [
      "columns in another order and a capitalised header",
      `Stripe_Customer_Id,Effective_From,Fleet_Sid\ncus_A1,2026-11-01,${FLEET}\n`,
      [
        {
          targetType: "fleet",
          targetId: FLEET,
          customerId: "cus_A1",
          from: "2026-11-01T00:00:00.000Z",
        },
      ],
    ],
    [
      "quoted fields, CRLF line endings and padding",
      `"sim_sid","stripe_customer_id"\r\n"${SIM}", "cus_A1"\r\n ${SIM2} ,cus_B2\r\n`,
      [
        {
          targetType: "sim",
          targetId: SIM,
          customerId: "cus_A1",
          from: "2026-11-20T11:00:00.000Z",
        },
        {
          targetType: "sim",
          targetId: SIM2,
          customerId: "cus_B2",
          from: "2026-11-20T11:00:00.000Z",
        },
      ],
    ],
  ])("imports every row of a good CSV of %s", async (_what, csv, expected) => {
    const { ledger } = await openTestLedger();
    const r = await importCustomersCsv({ ledger, csv, now: NOW });
    expect(r).toMatchObject({ imported: expected.length, unchanged: 0, errors: [], moves: [] });
    expect(await rows(ledger)).toEqual(expected);
  });

  it.each<[string, string, number, string]>([
    [
      "a bad SIM SID",
      `sim_sid,stripe_customer_id\n${SIM},cus_A1\nHSnope,cus_B2\n${SIM2},cus_C3\n`,
      3,
      '"HSnope" is not a Super SIM SID',
    ],
    [
      "a bad customer id on the last row",
      `sim_sid,stripe_customer_id\n${SIM},cus_A1\n${SIM2},cus_B2\n${OTHER_SIM},customer-3\n`,
      4,
      '"customer-3" is not a Stripe customer id',
    ],
    [
      "a bad effective time",
      `fleet_sid,stripe_customer_id,effective_from\n${FLEET},cus_A1,2026-11-01\n${OTHER_FLEET},cus_B2,next tuesday\n`,
      3,
      '"next tuesday" is not an ISO 8601 time',
    ],
    [
      "an empty SIM SID",
      `sim_sid,stripe_customer_id\n,cus_A1\n${SIM2},cus_B2\n`,
      2,
      '"" is not a Super SIM SID',
    ],
    [
      "a row with too many columns",
      `sim_sid,stripe_customer_id\n${SIM},cus_A1\n${SIM2},cus_B2,extra\n`,
      3,
      "3 field(s), the header has 2",
    ],
    [
      "bad rows in a CRLF file",
      `sim_sid,stripe_customer_id\r\n${SIM},cus_A1\r\n"HSnope","cus_B2"\r\n`,
      3,
      '"HSnope" is not a Super SIM SID',
    ],
  ])(
    "imports nothing from a CSV with %s among good rows and reports its line number",
    async (_what, csv, line, message) => {
      const { ledger } = await openTestLedger();
      const r = await importCustomersCsv({ ledger, csv, now: NOW });
      expect(r.imported).toBe(0);
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]?.line).toBe(line);
      expect(r.errors[0]?.message).toContain(message);
      expect(await ledger.assignments.list()).toEqual([]);
    },
  );

  it("reports every bad row, each with its own line number", async () => {
    const { ledger } = await openTestLedger();
    const r = await importCustomersCsv({
      ledger,
      csv: `sim_sid,stripe_customer_id\nHSnope,cus_A1\n${SIM},cus_B2\n${SIM2},bad\n`,
      now: NOW,
    });
    expect(r.imported).toBe(0);
    expect(r.errors.map((e) => e.line)).toEqual([2, 4]);
    expect(await ledger.assignments.list()).toEqual([]);
  });

  it("leaves earlier assignments untouched when an import is refused", async () => {
    const { ledger } = await openTestLedger();
    const { assignment: before } = await assignCustomer({
      ledger,
      input: { targetType: "sim", targetId: SIM, customerId: "cus_A1" },
      now: NOW,
    });
    const r = await importCustomersCsv({
      ledger,
      csv: `sim_sid,stripe_customer_id\n${SIM2},cus_B2\nHSnope,cus_C3\n`,
      now: NOW,
    });
    expect(r.imported).toBe(0);
    expect(await ledger.assignments.list()).toEqual([before]);
  });

  it.each([
    ["no target column", `stripe_customer_id\ncus_A1\n`],
    ["no customer column", `sim_sid\n${SIM}\n`],
    ["two target columns", `sim_sid,fleet_sid,stripe_customer_id\n${SIM},${FLEET},cus_A1\n`],
    ["an unknown column", `sim_sid,stripe_customer_id,note\n${SIM},cus_A1,hi\n`],
    ["a misspelt column", `sim_sid,stripe_customer\n${SIM},cus_A1\n`],
    ["no header at all (an empty file)", ""],
  ])("reports a header with %s on line 1 and imports nothing", async (_what, csv) => {
    const { ledger } = await openTestLedger();
    const r = await importCustomersCsv({ ledger, csv, now: NOW });
    expect(r.imported).toBe(0);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]?.line).toBe(1);
    expect(r.errors[0]?.message).toContain("header must hold exactly one of");
    expect(await ledger.assignments.list()).toEqual([]);
  });

  it("a quoted field may hold the delimiter, and the value is checked without the quotes", async () => {
    const { ledger } = await openTestLedger();
    const r = await importCustomersCsv({
      ledger,
      csv: `sim_sid,stripe_customer_id\n"${SIM}","cus_A1,cus_B2"\n`,
      now: NOW,
    });
    expect(r.imported).toBe(0);
    expect(r.errors).toEqual([
      { line: 2, message: '"cus_A1,cus_B2" is not a Stripe customer id (cus_…)' },
    ]);
  });

  it("counts blank lines when reporting a bad row's line number", async () => {
    // Line 1 header, line 2 good, line 3 blank, line 4 good, line 5 bad.
    const { ledger } = await openTestLedger();
    const csv = `sim_sid,stripe_customer_id\n${SIM},cus_A1\n\n${SIM2},cus_B2\nHSnope,cus_C3\n`;
    const r = await importCustomersCsv({ ledger, csv, now: NOW });
    expect(r.imported).toBe(0);
    expect(r.errors.map((e) => e.line)).toEqual([5]);
  });

  it("counts the lines inside a multi-line quoted field when reporting a later bad row", async () => {
    // Line 1 header, lines 2-3 one record (quoted newline, itself bad), line 4 bad.
    const { ledger } = await openTestLedger();
    const csv = `sim_sid,stripe_customer_id\n${SIM},"cus_A1\nx"\nHSnope,cus_C3\n`;
    const r = await importCustomersCsv({ ledger, csv, now: NOW });
    expect(r.imported).toBe(0);
    expect(r.errors.map((e) => e.line)).toEqual([2, 4]);
  });

  it("accepts a CSV that starts with a UTF-8 byte order mark, as spreadsheet exports do", async () => {
    const { ledger } = await openTestLedger();
    const r = await importCustomersCsv({
      ledger,
      csv: `\ufeffsim_sid,stripe_customer_id\r\n${SIM},cus_A1\r\n`,
      now: NOW,
    });
    expect(r).toMatchObject({ imported: 1, unchanged: 0, errors: [], moves: [] });
  });
});

describe("the customer history and unmapped usage over ingested SIMs", () => {
  const HOUR_9 = T("2026-11-20T09:00:00Z");
  const HOUR = 3_600_000;

  async function ingested() {
    const t = await testIngest({}, () => NOW);
    const ended = (
      n: number,
      simSid: string,
      iccid: string,
      fleetSid: string | null,
      bytes: number,
    ) =>
      buildCloudEvent({
        eventSid: `EZ${n.toString(16).padStart(32, "0")}`,
        kind: "data-session.ended",
        accountSid: ACCOUNT,
        simSid,
        iccid,
        fleetSid,
        timestampMs: T("2026-11-20T09:50:00Z"),
        sessionSid: `PI${n.toString(16).padStart(32, "0")}`,
        sessionStartMs: T("2026-11-20T09:10:00Z"),
        sessionEndMs: T("2026-11-20T09:50:00Z"),
        windowStartMs: T("2026-11-20T09:10:00Z"),
        windowEndMs: T("2026-11-20T09:50:00Z"),
        windowDown: bytes,
        cumulativeDown: bytes,
      });
    const summary = await t.ingest([
      ended(1, SIM, ICCID, FLEET, 1000),
      ended(2, OTHER_SIM, ICCID2, null, 500),
    ]);
    expect(summary).toMatchObject({ counted: 2, quarantined: 0 });
    expect(await t.usage()).toEqual({
      [`${SIM}@2026-11-20T09:00:00.000Z`]: 1000,
      [`${OTHER_SIM}@2026-11-20T09:00:00.000Z`]: 500,
    });
    return t;
  }

  /** SIM SID → the customer of its usage in the 09:00 hour (ledger.customers.usageOwned) */
  async function owners(ledger: Ledger): Promise<Record<string, string | null>> {
    const owned = await ledger.customers.usageOwned(HOUR_9, HOUR_9 + HOUR);
    return Object.fromEntries(owned.map((u) => [u.simSid, u.customer]));
  }

  it("a SIM with no assignment resolves to no customer", async () => {
    const { ledger } = await ingested();
    expect((await owners(ledger))[SIM]).toBeNull();
  });

  it("a fleet assignment covers the fleet's SIMs and only them", async () => {
    const { ledger } = await ingested();
    const { assignment: a } = await assignCustomer({
      ledger,
      input: { targetType: "fleet", targetId: FLEET, customerId: "cus_Fleet" },
      now: NOW,
    });
    const o = await owners(ledger);
    expect(o[SIM]).toBe("cus_Fleet");
    expect(o[OTHER_SIM]).toBeNull();
    expect(
      await ledger.customers.covered([a, { targetType: "fleet", targetId: OTHER_FLEET }]),
    ).toEqual([[SIM], []]);
  });

  it("an ICCID assignment covers the SIM with that ICCID", async () => {
    const { ledger } = await ingested();
    const { assignment: a } = await assignCustomer({
      ledger,
      input: { targetType: "iccid", targetId: ICCID, customerId: "cus_Iccid" },
      now: NOW,
    });
    const o = await owners(ledger);
    expect(o[SIM]).toBe("cus_Iccid");
    expect(o[OTHER_SIM]).toBeNull();
    expect(await ledger.customers.covered([a])).toEqual([[SIM]]);
  });

  it("a SIM SID assignment covers that SIM", async () => {
    const { ledger } = await ingested();
    const { assignment: a } = await assignCustomer({
      ledger,
      input: { targetType: "sim", targetId: OTHER_SIM, customerId: "cus_Sim" },
      now: NOW,
    });
    const o = await owners(ledger);
    expect(o[OTHER_SIM]).toBe("cus_Sim");
    expect(o[SIM]).toBeNull();
    expect(await ledger.customers.covered([a])).toEqual([[OTHER_SIM]]);
  });

  it("the SIM's own (ICCID) assignment wins over its fleet's in the hours it is in effect", async () => {
    const t = await ingested();
    const { ledger } = t;
    await assignCustomer({
      ledger,
      input: {
        targetType: "fleet",
        targetId: FLEET,
        customerId: "cus_Fleet",
        effectiveFrom: T("2026-11-01T00:00:00Z"),
      },
      now: NOW,
    });
    await assignCustomer({
      ledger,
      input: {
        targetType: "iccid",
        targetId: ICCID,
        customerId: "cus_Iccid",
        effectiveFrom: T("2026-11-20T09:30:00Z"),
      },
      now: NOW,
    });
    expect((await owners(ledger))[SIM]).toBe("cus_Fleet");
    // 10:00 has no usage: the resolver over the ledger's assignments and fleet history
    expect(await customerAt(t, SIM, T("2026-11-20T10:00:00Z"))).toBe("cus_Iccid");
  });

  it("unmapped usage lists a SIM's usage until an assignment covers it", async () => {
    const { ledger } = await ingested();
    expect(await ledger.reads.unmapped()).toEqual(
      expect.arrayContaining([
        {
          simSid: SIM,
          iccid: ICCID,
          fleetSid: FLEET,
          bytes: 1000,
          firstHour: "2026-11-20T09:00:00.000Z",
          lastHour: "2026-11-20T09:00:00.000Z",
        },
        {
          simSid: OTHER_SIM,
          iccid: ICCID2,
          fleetSid: null,
          bytes: 500,
          firstHour: "2026-11-20T09:00:00.000Z",
          lastHour: "2026-11-20T09:00:00.000Z",
        },
      ]),
    );
    expect(await ledger.reads.unmapped()).toHaveLength(2);

    // Effective only from 11:00, after the usage: it still maps the earlier unmapped usage.
    await assignCustomer({
      ledger,
      input: { targetType: "fleet", targetId: FLEET, customerId: "cus_Fleet" },
      now: NOW,
    });
    expect((await ledger.reads.unmapped()).map((u) => u.simSid)).toEqual([OTHER_SIM]);

    await assignCustomer({
      ledger,
      input: { targetType: "sim", targetId: OTHER_SIM, customerId: "cus_Sim" },
      now: NOW,
    });
    expect(await ledger.reads.unmapped()).toEqual([]);
  });
});

describe("a SIM's fleet over time", () => {
  it("an older event retried hours later does not move the SIM back to the fleet it left", async () => {
    const t = await testIngest();
    const at = (sid: string, ms: number, fleetSid: string) =>
      buildCloudEvent({
        eventSid: sid,
        kind: "attachment.accepted",
        accountSid: `AC${"1".repeat(32)}`,
        simSid: `HS${"9".repeat(32)}`,
        iccid: "89883070000005381783",
        fleetSid,
        timestampMs: ms,
      });
    const fleetA = `HF${"a".repeat(32)}`;
    const fleetB = `HF${"b".repeat(32)}`;
    await t.ingest([at(`EZ${"1".repeat(32)}`, Date.parse("2026-11-27T10:00:00Z"), fleetA)]);
    await t.ingest([at(`EZ${"2".repeat(32)}`, Date.parse("2026-11-27T11:00:00Z"), fleetB)]);
    await t.ingest([at(`EZ${"3".repeat(32)}`, Date.parse("2026-11-27T10:30:00Z"), fleetA)]);
    expect(await t.sql("select fleet_sid from sims")).toEqual([{ fleet_sid: fleetB }]);
  });
});
