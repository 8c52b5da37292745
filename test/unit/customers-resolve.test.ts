import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AssignmentLike,
  effectiveHour,
  resolveCustomer,
  type TargetType,
} from "../../src/customers/resolve.ts";

const T = (iso: string) => Date.parse(iso);
const HOUR = 3_600_000;
const a = (
  id: number,
  targetType: TargetType,
  customerId: string,
  effectiveFrom: string,
): AssignmentLike => ({ id, targetType, customerId, effectiveFrom: T(effectiveFrom) });
/** As assignCustomer stores it: the effective time rounded up to the hour it applies from. */
const stored = (
  id: number,
  targetType: TargetType,
  customerId: string,
  effectiveFrom: string,
): AssignmentLike => ({
  id,
  targetType,
  customerId,
  effectiveFrom: effectiveHour(T(effectiveFrom)),
});

type Case = [name: string, assignments: AssignmentLike[], hour: string, expected: string | null];

describe("resolveCustomer", () => {
  const reassignedAt10 = [
    a(1, "sim", "cus_old", "2026-11-20T00:00:00Z"),
    a(2, "sim", "cus_new", "2026-11-20T10:00:00Z"),
  ];
  const reassignedAt1030 = [
    stored(1, "sim", "cus_old", "2026-11-20T00:00:00Z"),
    stored(2, "sim", "cus_new", "2026-11-20T10:30:00Z"),
  ];
  const simAndFleet = [
    a(1, "fleet", "cus_fleet", "2026-11-20T00:00:00Z"),
    a(2, "sim", "cus_sim", "2026-11-20T00:00:00Z"),
  ];

  it.each<Case>([
    ["a SIM with no assignment has no customer", [], "2026-11-20T09:00:00Z", null],
    [
      "the SIM's own assignment wins over its fleet's",
      simAndFleet,
      "2026-11-20T09:00:00Z",
      "cus_sim",
    ],
    [
      "the SIM's own assignment wins over its fleet's even when the fleet's is newer",
      [
        a(1, "sim", "cus_sim", "2026-11-20T00:00:00Z"),
        a(2, "fleet", "cus_fleet", "2026-11-20T05:00:00Z"),
      ],
      "2026-11-20T09:00:00Z",
      "cus_sim",
    ],
    [
      "an ICCID assignment counts as the SIM's own and wins over the fleet's",
      [
        a(1, "fleet", "cus_fleet", "2026-11-20T00:00:00Z"),
        a(2, "iccid", "cus_iccid", "2026-11-20T00:00:00Z"),
      ],
      "2026-11-20T09:00:00Z",
      "cus_iccid",
    ],
    [
      "a later ICCID assignment replaces an earlier sim_sid assignment",
      [
        a(1, "sim", "cus_sim", "2026-11-20T00:00:00Z"),
        a(2, "iccid", "cus_iccid", "2026-11-20T05:00:00Z"),
      ],
      "2026-11-20T09:00:00Z",
      "cus_iccid",
    ],
    [
      "after a re-assignment at 10:00 the 09:00 hour stays with the old customer",
      reassignedAt10,
      "2026-11-20T09:00:00Z",
      "cus_old",
    ],
    [
      "after a re-assignment at 10:00 the 10:00 hour goes to the new customer",
      reassignedAt10,
      "2026-11-20T10:00:00Z",
      "cus_new",
    ],
    [
      "a re-assignment at 10:30 leaves the 10:00 hour with the old customer",
      reassignedAt1030,
      "2026-11-20T10:00:00Z",
      "cus_old",
    ],
    [
      "a re-assignment at 10:30 takes effect from the 11:00 hour",
      reassignedAt1030,
      "2026-11-20T11:00:00Z",
      "cus_new",
    ],
    [
      "an unrounded effective time of 10:30 is not yet in effect for the 10:00 hour",
      [
        a(1, "sim", "cus_old", "2026-11-20T00:00:00Z"),
        a(2, "sim", "cus_new", "2026-11-20T10:30:00Z"),
      ],
      "2026-11-20T10:00:00Z",
      "cus_old",
    ],
    [
      "usage from before the first assignment goes to the first assignment",
      [
        a(1, "sim", "cus_first", "2026-11-20T10:00:00Z"),
        a(2, "sim", "cus_second", "2026-11-20T12:00:00Z"),
      ],
      "2026-11-20T03:00:00Z",
      "cus_first",
    ],
    [
      "usage from before the first assignment goes to the earliest one whatever the input order",
      [
        a(2, "sim", "cus_second", "2026-11-20T12:00:00Z"),
        a(1, "sim", "cus_first", "2026-11-20T10:00:00Z"),
      ],
      "2026-11-20T03:00:00Z",
      "cus_first",
    ],
    [
      "usage from before a fleet's only assignment goes to that fleet's customer",
      [a(1, "fleet", "cus_fleet", "2026-11-20T10:00:00Z")],
      "2026-11-20T03:00:00Z",
      "cus_fleet",
    ],
    [
      "before any SIM-level assignment, a fleet assignment in effect pays",
      [
        a(1, "fleet", "cus_fleet", "2026-11-20T00:00:00Z"),
        a(2, "sim", "cus_sim", "2026-11-20T10:00:00Z"),
      ],
      "2026-11-20T09:00:00Z",
      "cus_fleet",
    ],
    [
      "before any assignment at all, the first customer to cover the SIM pays (the fleet's from 08:00, not the SIM's own from 10:00)",
      [
        a(1, "fleet", "cus_fleet", "2026-11-20T08:00:00Z"),
        a(2, "sim", "cus_sim", "2026-11-20T10:00:00Z"),
      ],
      "2026-11-20T03:00:00Z",
      "cus_fleet",
    ],
    [
      "a SIM assignment dated in the future does not take this month's usage from the fleet's customer",
      [
        a(1, "fleet", "cus_a", "2026-11-01T00:00:00Z"),
        a(2, "sim", "cus_b", "2026-12-01T00:00:00Z"),
      ],
      "2026-11-20T09:00:00Z",
      "cus_a",
    ],
    [
      "usage before the fleet's assignment stays with the fleet's customer when the SIM's own is dated in the future",
      [
        a(1, "fleet", "cus_a", "2026-11-10T00:00:00Z"),
        a(2, "sim", "cus_b", "2026-12-01T00:00:00Z"),
      ],
      "2026-11-05T09:00:00Z",
      "cus_a",
    ],
    [
      "of two assignments effective at the same time the one with the higher id wins",
      [
        a(7, "sim", "cus_higher", "2026-11-20T10:00:00Z"),
        a(3, "sim", "cus_lower", "2026-11-20T10:00:00Z"),
      ],
      "2026-11-20T10:00:00Z",
      "cus_higher",
    ],
    [
      "of two fleet assignments effective at the same time the one with the higher id wins",
      [
        a(3, "fleet", "cus_lower", "2026-11-20T10:00:00Z"),
        a(7, "fleet", "cus_higher", "2026-11-20T10:00:00Z"),
      ],
      "2026-11-20T11:00:00Z",
      "cus_higher",
    ],
    [
      "before two assignments effective at the same time, the one in effect at that time (higher id) pays",
      [
        a(7, "sim", "cus_higher", "2026-11-20T10:00:00Z"),
        a(3, "sim", "cus_lower", "2026-11-20T10:00:00Z"),
      ],
      "2026-11-20T09:00:00Z",
      "cus_higher",
    ],
  ])("%s", (_name, assignments, hour, expected) => {
    expect(resolveCustomer(assignments, T(hour))).toBe(expected);
  });

  const assignmentsArb = fc
    .array(
      fc.record({
        targetType: fc.constantFrom<TargetType>("sim", "iccid", "fleet"),
        customerId: fc.constantFrom("cus_a", "cus_b", "cus_c", "cus_d"),
        effectiveFrom: fc
          .integer({ min: -48, max: 48 })
          .map((h) => T("2026-11-20T00:00:00Z") + h * HOUR),
      }),
      { maxLength: 12 },
    )
    .map((list) => list.map((x, i): AssignmentLike => ({ ...x, id: i + 1 })));
  const hourArb = fc
    .integer({ min: -60, max: 60 })
    .map((h) => T("2026-11-20T00:00:00Z") + h * HOUR);

  it("the customer is always one of the assigned customers, and none only when nothing is assigned", () => {
    fc.assert(
      fc.property(assignmentsArb, hourArb, (assignments, hour) => {
        const got = resolveCustomer(assignments, hour);
        if (assignments.length === 0) expect(got).toBeNull();
        else expect(assignments.map((x) => x.customerId)).toContain(got);
      }),
    );
  });

  it("the customer does not depend on the order the assignments are listed in", () => {
    fc.assert(
      fc.property(
        assignmentsArb.chain((list) =>
          fc.tuple(fc.constant(list), fc.shuffledSubarray(list, { minLength: list.length })),
        ),
        hourArb,
        ([list, shuffled], hour) => {
          expect(resolveCustomer(shuffled, hour)).toBe(resolveCustomer(list, hour));
        },
      ),
    );
  });
});

describe("effectiveHour", () => {
  it.each([
    ["2026-11-20T10:00:00.000Z", "2026-11-20T10:00:00.000Z"],
    ["2026-11-20T10:00:00.001Z", "2026-11-20T11:00:00.000Z"],
    ["2026-11-20T10:30:00.000Z", "2026-11-20T11:00:00.000Z"],
    ["2026-11-20T10:59:59.999Z", "2026-11-20T11:00:00.000Z"],
    ["2026-11-20T23:30:00.000Z", "2026-11-21T00:00:00.000Z"],
    ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.000Z"],
  ])("an assignment effective at %s applies from %s", (t, hour) => {
    expect(new Date(effectiveHour(T(t))).toISOString()).toBe(hour);
  });

  it("the effective hour is the first whole hour at or after the time", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4_102_444_800_000 }), (t) => {
        const h = effectiveHour(t);
        expect(h % HOUR).toBe(0);
        expect(h).toBeGreaterThanOrEqual(t);
        expect(h - t).toBeLessThan(HOUR);
      }),
    );
  });
});
