import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  boundary,
  type CustomerBilling,
  type Interval,
  type PreviousPeriod,
  periodOpenAt,
  previousPeriodStart,
  stampFor,
} from "../../src/billing/periods.ts";
import { billingRefreshDue } from "../../src/billing/subscriptions.ts";

const T = (iso: string) => Date.parse(iso);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const policy = { graceMs: HOUR, marginMs: 10 * 60_000 };

describe("period boundaries from the billing cycle anchor", () => {
  it.each<[string, Interval, number, string[]]>([
    [
      "2026-01-01T00:00:00Z",
      "month",
      1,
      ["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z", "2026-03-01T00:00:00.000Z"],
    ],
    [
      "2026-01-15T09:30:00Z",
      "month",
      1,
      ["2026-01-15T09:30:00.000Z", "2026-02-15T09:30:00.000Z", "2026-03-15T09:30:00.000Z"],
    ],
    [
      "2027-01-29T00:00:00Z",
      "month",
      1,
      ["2027-01-29T00:00:00.000Z", "2027-02-28T00:00:00.000Z", "2027-03-29T00:00:00.000Z"],
    ],
    [
      "2028-01-30T12:00:00Z",
      "month",
      1,
      ["2028-01-30T12:00:00.000Z", "2028-02-29T12:00:00.000Z", "2028-03-30T12:00:00.000Z"],
    ],
    [
      "2026-01-31T23:00:00Z",
      "month",
      1,
      [
        "2026-01-31T23:00:00.000Z",
        "2026-02-28T23:00:00.000Z",
        "2026-03-31T23:00:00.000Z",
        "2026-04-30T23:00:00.000Z",
      ],
    ],
    [
      "2028-01-31T00:00:00Z",
      "month",
      1,
      ["2028-01-31T00:00:00.000Z", "2028-02-29T00:00:00.000Z", "2028-03-31T00:00:00.000Z"],
    ],
    [
      "2026-01-31T00:00:00Z",
      "month",
      3,
      ["2026-01-31T00:00:00.000Z", "2026-04-30T00:00:00.000Z", "2026-07-31T00:00:00.000Z"],
    ],
    [
      "2028-02-29T00:00:00Z",
      "year",
      1,
      ["2028-02-29T00:00:00.000Z", "2029-02-28T00:00:00.000Z", "2030-02-28T00:00:00.000Z"],
    ],
    [
      "2026-11-30T06:00:00Z",
      "day",
      1,
      ["2026-11-30T06:00:00.000Z", "2026-12-01T06:00:00.000Z", "2026-12-02T06:00:00.000Z"],
    ],
  ])(
    "an anchor of %s (%s ×%i) gives boundaries %j, never drifting to a short month's day",
    (anchor, interval, count, expected) => {
      expect(
        expected.map((_, n) => new Date(boundary(T(anchor), interval, count, n)).toISOString()),
      ).toEqual(expected);
    },
  );

  it("stepping back one period from a boundary finds the boundary before it", () => {
    const anchor = T("2026-01-31T23:00:00Z");
    expect(
      new Date(previousPeriodStart(anchor, "month", 1, T("2026-03-31T23:00:00Z"))).toISOString(),
    ).toBe("2026-02-28T23:00:00.000Z");
    expect(
      new Date(previousPeriodStart(anchor, "month", 1, T("2026-02-28T23:00:00Z"))).toISOString(),
    ).toBe("2026-01-31T23:00:00.000Z");
  });

  it("every boundary is after the one before it and keeps the anchor's time of day", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: T("2024-01-01T00:00:00Z"), max: T("2030-01-01T00:00:00Z") }),
        fc.constantFrom<Interval>("month", "year"),
        fc.integer({ min: 0, max: 40 }),
        (anchor, interval, n) => {
          const a = boundary(anchor, interval, 1, n);
          const b = boundary(anchor, interval, 1, n + 1);
          expect(b).toBeGreaterThan(a);
          expect(b % DAY).toBe(anchor % DAY);
          expect(previousPeriodStart(anchor, interval, 1, b)).toBe(a);
        },
      ),
    );
  });
});

/** A customer billed monthly from `anchor`, now in the period containing `now`. */
function billing(
  anchor: string,
  now: number,
  previous: Partial<PreviousPeriod> | null = {},
  extra: Partial<CustomerBilling> = {},
): CustomerBilling {
  const a = T(anchor);
  let n = 0;
  while (boundary(a, "month", 1, n + 1) <= now) n++;
  const start = boundary(a, "month", 1, n);
  return {
    customerId: "cus_1",
    state: "ok",
    detail: null,
    subscriptionId: "sub_1",
    itemId: "si_1",
    priceId: "price_1",
    periodStart: start,
    periodEnd: boundary(a, "month", 1, n + 1),
    previous:
      previous === null
        ? null
        : {
            start: boundary(a, "month", 1, n - 1),
            end: start,
            invoiceId: "in_1",
            status: "draft",
            finalizesAt: start + HOUR,
            finalizedAt: null,
            ...previous,
          },
    refreshedAt: now,
    ...extra,
  };
}

type Row = [
  name: string,
  hour: string,
  now: string,
  b: (now: number) => CustomerBilling | undefined,
  expected: string,
];

describe("where an hour's delta is stamped", () => {
  const inHour = (h: string) => `in its hour ${new Date(T(h)).toISOString()}`;
  const lateNow = "late, now";
  it.each<Row>([
    [
      "an hour in the current period (anchor on the 1st)",
      "2026-12-01T05:00:00Z",
      "2026-12-01T09:10:00Z",
      (n) => billing("2026-01-01T00:00:00Z", n),
      inHour("2026-12-01T05:00:00Z"),
    ],
    [
      "the hour before the 15th for a customer billed on the 15th, its draft open",
      "2026-12-15T08:00:00Z",
      "2026-12-15T09:20:00Z",
      (n) => billing("2026-01-15T09:00:00Z", n),
      inHour("2026-12-15T08:00:00Z"),
    ],
    [
      "the 14th for a customer billed on the 15th, after that invoice finalized",
      "2026-12-14T10:00:00Z",
      "2026-12-16T10:00:00Z",
      (n) =>
        billing("2026-01-15T00:00:00Z", n, {
          status: "open",
          finalizesAt: null,
          finalizedAt: T("2026-12-15T01:00:00Z"),
        }),
      lateNow,
    ],
    [
      "the 30th for a customer billed on the 15th (not restamped on the 1st)",
      "2026-11-30T10:00:00Z",
      "2026-12-02T10:00:00Z",
      (n) => billing("2026-01-15T00:00:00Z", n),
      inHour("2026-11-30T10:00:00Z"),
    ],
    [
      "November usage on 1 December for a customer billed on the 15th",
      "2026-11-29T23:00:00Z",
      "2026-12-01T00:30:00Z",
      (n) => billing("2026-01-15T00:00:00Z", n),
      inHour("2026-11-29T23:00:00Z"),
    ],
    [
      "the last hour before a rollover on the 31st, inside the grace with a draft",
      "2026-03-31T22:00:00Z",
      "2026-03-31T23:20:00Z",
      (n) => billing("2026-01-31T23:00:00Z", n),
      inHour("2026-03-31T22:00:00Z"),
    ],
    [
      "February 28th's last hour for an anchor on the 31st, draft open",
      "2026-02-28T22:00:00Z",
      "2026-02-28T23:30:00Z",
      (n) => billing("2026-01-31T23:00:00Z", n),
      inHour("2026-02-28T22:00:00Z"),
    ],
    [
      "an anchor on the 29th in a non-leap February",
      "2027-02-27T12:00:00Z",
      "2027-02-28T00:05:00Z",
      (n) => billing("2027-01-29T00:00:00Z", n),
      inHour("2027-02-27T12:00:00Z"),
    ],
    [
      "an anchor on the 30th: the 1st of March is in the period that began on Feb 28",
      "2027-03-01T01:00:00Z",
      "2027-03-01T02:00:00Z",
      (n) => billing("2027-01-30T00:00:00Z", n),
      inHour("2027-03-01T01:00:00Z"),
    ],
    [
      "the previous period whose draft finalizes within the margin",
      "2026-12-14T10:00:00Z",
      "2026-12-15T00:55:00Z",
      (n) => billing("2026-01-15T00:00:00Z", n, { finalizesAt: T("2026-12-15T01:00:00Z") }),
      lateNow,
    ],
    [
      "the previous period whose draft finalizes just beyond the margin",
      "2026-12-14T10:00:00Z",
      "2026-12-15T00:49:00Z",
      (n) => billing("2026-01-15T00:00:00Z", n, { finalizesAt: T("2026-12-15T01:00:00Z") }),
      inHour("2026-12-14T10:00:00Z"),
    ],
    [
      "just after the rollover, no draft visible yet, inside the grace",
      "2026-12-14T23:00:00Z",
      "2026-12-15T00:10:00Z",
      (n) =>
        billing("2026-01-15T00:00:00Z", n, { invoiceId: null, status: null, finalizesAt: null }),
      inHour("2026-12-14T23:00:00Z"),
    ],
    [
      "no draft visible and the grace has run out",
      "2026-12-14T23:00:00Z",
      "2026-12-15T00:55:00Z",
      (n) =>
        billing("2026-01-15T00:00:00Z", n, { invoiceId: null, status: null, finalizesAt: null }),
      lateNow,
    ],
    [
      "a draft kept open by hand (no automatic finalization)",
      "2026-12-01T00:00:00Z",
      "2026-12-18T00:00:00Z",
      (n) => billing("2026-01-15T00:00:00Z", n, { finalizesAt: null }),
      inHour("2026-12-01T00:00:00Z"),
    ],
    [
      "an hour two periods back",
      "2026-10-20T00:00:00Z",
      "2026-12-16T00:00:00Z",
      (n) => billing("2026-01-15T00:00:00Z", n),
      lateNow,
    ],
    [
      "an hour older than Stripe's window (34 days and a bit) in a yearly period",
      "2026-10-01T00:00:00Z",
      "2026-11-04T01:00:00Z",
      (n) => ({
        ...billing("2026-01-01T00:00:00Z", n),
        periodStart: T("2026-01-01T00:00:00Z"),
        periodEnd: T("2027-01-01T00:00:00Z"),
      }),
      lateNow,
    ],
    [
      "an hour just inside the window in a yearly period",
      "2026-10-01T00:00:00Z",
      "2026-11-03T23:00:00Z",
      (n) => ({
        ...billing("2026-01-01T00:00:00Z", n),
        periodStart: T("2026-01-01T00:00:00Z"),
        periodEnd: T("2027-01-01T00:00:00Z"),
      }),
      inHour("2026-10-01T00:00:00Z"),
    ],
    [
      "usage from before the subscription began",
      "2026-12-03T00:00:00Z",
      "2026-12-10T00:00:00Z",
      (n) => billing("2026-12-08T00:00:00Z", n, null),
      lateNow,
    ],
    [
      "the current hour is stamped inside it, not in the future",
      "2026-12-10T09:00:00Z",
      "2026-12-10T09:00:00Z",
      (n) => billing("2026-12-08T00:00:00Z", n, null),
      inHour("2026-12-10T09:00:00Z"),
    ],
    [
      "a customer without a subscription",
      "2026-12-10T09:00:00Z",
      "2026-12-10T10:00:00Z",
      () => undefined,
      "hold no_subscription",
    ],
    [
      "a customer whose subscription was looked up and has no item on the meter",
      "2026-12-10T09:00:00Z",
      "2026-12-10T10:00:00Z",
      (n) => billing("2026-12-08T00:00:00Z", n, null, { state: "none", detail: "no item" }),
      "hold no_subscription",
    ],
    [
      "a customer with two items on the meter",
      "2026-12-10T09:00:00Z",
      "2026-12-10T10:00:00Z",
      (n) => billing("2026-12-08T00:00:00Z", n, null, { state: "ambiguous", detail: "2 items" }),
      "hold ambiguous_subscription",
    ],
    [
      "a stored period that has already ended",
      "2026-12-10T09:00:00Z",
      "2027-01-09T10:00:00Z",
      () => billing("2026-12-08T00:00:00Z", T("2026-12-10T10:00:00Z"), null),
      "hold stale_period",
    ],
  ])("%s: %s at %s is stamped %s", (_name, hour, now, b, expected) => {
    const n = T(now);
    const s = stampFor(T(hour), n, b(n), policy);
    if (s.kind === "stamp" && s.late) expect(s.timestamp).toBe(Math.floor(n / 1000));
    const got =
      s.kind === "hold"
        ? `hold ${s.reason}`
        : s.late
          ? lateNow
          : inHour(new Date(s.timestamp * 1000).toISOString());
    expect(got).toBe(expected);
  });

  it("a late stamp always lies inside the current period and a timely one inside its hour", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: T("2026-01-01T00:00:00Z"), max: T("2027-12-31T00:00:00Z") }),
        fc.integer({ min: 0, max: 60 * 24 }),
        fc.constantFrom("draft", "open"),
        (now, hoursBack, status) => {
          const b = billing("2026-01-31T23:00:00Z", now, { status });
          const hour = Math.floor(now / HOUR) * HOUR - hoursBack * HOUR;
          const s = stampFor(hour, now, b, policy);
          if (s.kind !== "stamp") throw new Error("unexpected hold");
          const t = s.timestamp * 1000;
          if (s.late) {
            expect(t).toBeGreaterThanOrEqual((b.periodStart as number) - 999);
            expect(t).toBeLessThan(b.periodEnd as number);
          } else {
            expect(t).toBe(hour);
          }
        },
      ),
    );
  });
});

describe("stale subscription data", () => {
  it("a stored period that has ended stays open to its own rows only until the grace runs out", () => {
    const now = T("2026-12-01T00:20:00Z");
    const b = billing("2026-01-01T00:00:00Z", T("2026-11-20T00:00:00Z"));
    const t = T("2026-11-30T22:00:00Z");
    expect(periodOpenAt(t, now, b, policy)).toBe(true);
    expect(periodOpenAt(t, T("2026-12-01T00:55:00Z"), b, policy)).toBe(false);
    expect(periodOpenAt(t, T("2026-12-01T05:00:00Z"), b, policy)).toBe(false);
  });

  it("a previous period without an invoice forces a lookup only until the grace runs out", () => {
    const b = billing("2026-01-01T00:00:00Z", T("2026-12-01T00:10:00Z"), {
      invoiceId: null,
      status: null,
      finalizesAt: null,
    });
    const fresh = new Map([["cus_1", b]]);
    expect(billingRefreshDue(fresh, ["cus_1"], T("2026-12-01T00:30:00Z"), 300_000, HOUR)).toBe(
      true,
    );
    const later = new Map([["cus_1", { ...b, refreshedAt: T("2026-12-10T00:00:00Z") }]]);
    expect(billingRefreshDue(later, ["cus_1"], T("2026-12-10T00:01:00Z"), 300_000, HOUR)).toBe(
      false,
    );
  });
});
