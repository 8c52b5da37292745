import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  customerResolver,
  loadedFleets,
  resolverOver,
  type SimInfo,
  sqliteDirectory,
} from "../../src/customers/customers.ts";
import type { FleetObservation } from "../../src/customers/resolve.ts";
import { openDb } from "../../src/db/client.ts";

// The planner resolves over loaded fleet histories (src/reporting/plan-steps.ts, PostgreSQL's
// fleetsOf); the views over SQLite's lazy per SIM-hour lookups. Both run the same core
// (resolverOver): here every (SIM, hour) answer of the two is compared on random histories with
// move hours, flapping, SIM, ICCID and fleet assignments, and a SIM never loaded throws.

const HOUR = 3_600_000;
const BASE = Date.UTC(2026, 0, 1);
const SIMS = [0, 1, 2, 3].map((i) => `HS${String(i).repeat(32)}`);
const ICCIDS = ["89883070000005381781", "89883070000005381782", "89883070000005381783"];
const FLEETS = [`HF${"7".repeat(32)}`, `HF${"2".repeat(32)}`, `HF${"c".repeat(32)}`];
const CUSTOMERS = ["cus_a", "cus_b", "cus_c"];

const obs = fc.record({
  sim: fc.integer({ min: 0, max: 3 }),
  hour: fc.integer({ min: 0, max: 12 }),
  fleet: fc.integer({ min: 0, max: 2 }),
});
const assignment = fc.record({
  type: fc.constantFrom("sim", "iccid", "fleet"),
  idx: fc.integer({ min: 0, max: 3 }),
  customer: fc.integer({ min: 0, max: 2 }),
  hour: fc.integer({ min: -2, max: 14 }),
});

describe("resolverOver with loaded fleet histories", () => {
  it("answers every (SIM, hour) as customerResolver(db) does", () => {
    fc.assert(
      fc.property(
        fc.array(obs, { maxLength: 30 }),
        fc.array(assignment, { maxLength: 8 }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 3, maxLength: 3 }),
        (observations, assigns, iccidOf) => {
          const db = openDb(":memory:");
          const c = db.$client;
          // SIM 3 has no sims row (usage without a row); the others share ICCIDs now and then
          for (let i = 0; i < 3; i++)
            c.prepare(
              "insert into sims (sim_sid, iccid, fleet_sid, account_sid, first_seen_at, last_event_at) values (?, ?, null, 'AC', 0, 0)",
            ).run(SIMS[i], ICCIDS[iccidOf[i] as number]);
          const ins = c.prepare(
            "insert or ignore into sim_fleet_hours (sim_sid, hour, fleet_sid) values (?, ?, ?)",
          );
          for (const o of observations) ins.run(SIMS[o.sim], BASE + o.hour * HOUR, FLEETS[o.fleet]);
          const add = c.prepare(
            "insert into assignments (target_type, target_id, customer_id, effective_from, created_at) values (?, ?, ?, ?, 0)",
          );
          for (const a of assigns) {
            const target =
              a.type === "sim"
                ? SIMS[a.idx]
                : a.type === "iccid"
                  ? ICCIDS[a.idx % 3]
                  : FLEETS[a.idx % 3];
            add.run(a.type, target, CUSTOMERS[a.customer], BASE + a.hour * HOUR);
          }
          const histories = new Map<string, FleetObservation[]>();
          const rows = new Map<string, SimInfo | null>();
          for (const s of SIMS) {
            histories.set(
              s,
              c
                .prepare(
                  "select hour, fleet_sid as fleetSid from sim_fleet_hours where sim_sid = ? order by hour, fleet_sid",
                )
                .all(s) as FleetObservation[],
            );
            rows.set(
              s,
              (c
                .prepare(
                  "select sim_sid as simSid, iccid, fleet_sid as fleetSid from sims where sim_sid = ?",
                )
                .get(s) as SimInfo | undefined) ?? null,
            );
          }
          const want = customerResolver(db);
          const got = resolverOver(sqliteDirectory(db), loadedFleets({ histories, sims: rows }));
          const hours = Array.from({ length: 18 }, (_, i) => BASE + (i - 3) * HOUR);
          for (const s of SIMS) {
            for (const h of hours) expect(got.resolve(s, h), `${s} ${h}`).toBe(want.resolve(s, h));
            expect(got.resolveHours(s, hours)).toEqual(want.resolveHours(s, hours));
          }
          for (const f of FLEETS) {
            const members = c
              .prepare("select distinct sim_sid from sim_fleet_hours where fleet_sid = ?")
              .pluck()
              .all(f) as string[];
            const withMembers = resolverOver(
              sqliteDirectory(db),
              loadedFleets({ fleetMembers: new Map([[f, members]]) }),
            );
            expect(withMembers.simsFor({ targetType: "fleet", targetId: f }).sort()).toEqual(
              want.simsFor({ targetType: "fleet", targetId: f }).sort(),
            );
          }
          c.close();
        },
      ),
      { numRuns: 150 },
    );
  });

  it("throws for a SIM whose history was not loaded, never answering null", () => {
    const db = openDb(":memory:");
    const r = resolverOver(
      { assignments: [], sims: [] },
      loadedFleets({ histories: new Map([[SIMS[0] as string, []]]), sims: new Map() }),
    );
    expect(() => r.resolve(SIMS[1] as string, BASE)).toThrow(/not loaded/);
    expect(() => r.simsFor({ targetType: "fleet", targetId: FLEETS[0] as string })).toThrow(
      /not loaded/,
    );
    db.$client.close();
  });
});
