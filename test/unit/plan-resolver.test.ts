import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolverOver } from "../../src/customers/customers.ts";
import { loadedFleets, type SimInfo } from "../../src/customers/fleets.ts";
import type { FleetObservation } from "../../src/customers/resolve.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";

// The planner resolves over loaded fleet histories (src/reporting/plan-steps.ts, PostgreSQL's
// fleetsOf); the views over what the ledger answers for a SIM-hour (SQLite: customerResolver's
// lazy per SIM-hour lookups; PostgreSQL: the adapter's own reads). Both run the same core
// (resolverOver): here every (SIM, hour) answer of resolverOver over histories loaded with plain
// SQL is compared with the ledger's own answer through the port (ledger.customers.usageOwned for
// a usage row in every SIM-hour, ledger.customers.covered for a fleet's SIMs), on random
// histories with move hours, flapping, SIM, ICCID and fleet assignments, and a SIM never loaded
// throws.

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

/** code-unit order (SQLite's BINARY, PostgreSQL's "C"), whatever the server's collation */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

describe("resolverOver with loaded fleet histories", () => {
  let t: TestLedger;
  beforeAll(async () => {
    t = await openTestLedger({ autoClose: false });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("answers every (SIM, hour) as the ledger does", async () => {
    const hours = Array.from({ length: 18 }, (_, i) => BASE + (i - 3) * HOUR);
    await fc.assert(
      fc.asyncProperty(
        fc.array(obs, { maxLength: 30 }),
        fc.array(assignment, { maxLength: 8 }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 3, maxLength: 3 }),
        async (observations, assigns, iccidOf) => {
          await t.reset();
          const { ledger, sql } = t;
          // SIM 3 has no sims row (usage without a row); the others share ICCIDs now and then
          for (let i = 0; i < 3; i++)
            await sql(
              "insert into sims (sim_sid, iccid, fleet_sid, account_sid, first_seen_at, last_event_at) values (?, ?, null, 'AC', 0, 0)",
              SIMS[i],
              ICCIDS[iccidOf[i] as number],
            );
          // each (SIM, hour, fleet) once (the table's key)
          const seen = new Set<string>();
          for (const o of observations) {
            const key = `${o.sim}:${o.hour}:${o.fleet}`;
            if (seen.has(key)) continue;
            seen.add(key);
            await sql(
              "insert into sim_fleet_hours (sim_sid, hour, fleet_sid) values (?, ?, ?)",
              SIMS[o.sim],
              BASE + o.hour * HOUR,
              FLEETS[o.fleet],
            );
          }
          for (const a of assigns) {
            const target =
              a.type === "sim"
                ? SIMS[a.idx]
                : a.type === "iccid"
                  ? ICCIDS[a.idx % 3]
                  : FLEETS[a.idx % 3];
            await sql(
              "insert into assignments (target_type, target_id, customer_id, effective_from, created_at) values (?, ?, ?, ?, 0)",
              a.type,
              target,
              CUSTOMERS[a.customer],
              BASE + a.hour * HOUR,
            );
          }
          // a usage row in every SIM-hour asked about: the ledger's answer for each
          for (const s of SIMS)
            for (const h of hours)
              await sql("insert into usage_hourly (hour, sim_sid, bytes) values (?, ?, 1)", h, s);

          const histories = new Map<string, FleetObservation[]>();
          const rows = new Map<string, SimInfo | null>();
          const simRows = await ledger.customers.sims(SIMS);
          for (const s of SIMS) {
            histories.set(
              s,
              (
                await sql<{ hour: number; fleetSid: string }>(
                  'select hour, fleet_sid as "fleetSid" from sim_fleet_hours where sim_sid = ?',
                  s,
                )
              ).sort((x, y) => x.hour - y.hour || byText(x.fleetSid, y.fleetSid)),
            );
            const row = simRows.get(s);
            rows.set(
              s,
              row ? { simSid: row.simSid, iccid: row.iccid, fleetSid: row.fleetSid } : null,
            );
          }
          const directory = {
            assignments: await ledger.assignments.list(),
            sims: [...rows.values()].filter((r): r is SimInfo => r !== null),
          };
          const got = resolverOver(directory, loadedFleets({ histories, sims: rows }));
          const owned = new Map(
            (await ledger.customers.usageOwned(hours[0] as number, BASE + 15 * HOUR)).map((u) => [
              `${u.simSid} ${u.hour}`,
              u.customer,
            ]),
          );
          expect(owned.size).toBe(SIMS.length * hours.length);
          for (const s of SIMS) {
            const want = hours.map((h) => owned.get(`${s} ${h}`));
            for (const [i, h] of hours.entries())
              expect(got.resolve(s, h), `${s} ${h}`).toBe(want[i]);
            expect(got.resolveHours(s, hours)).toEqual(want);
          }
          const covered = await ledger.customers.covered(
            FLEETS.map((f) => ({ targetType: "fleet" as const, targetId: f })),
          );
          for (const [i, f] of FLEETS.entries()) {
            const members = (
              await sql<{ s: string }>(
                "select distinct sim_sid as s from sim_fleet_hours where fleet_sid = ?",
                f,
              )
            ).map((r) => r.s);
            const withMembers = resolverOver(
              directory,
              loadedFleets({ fleetMembers: new Map([[f, members]]) }),
            );
            expect(withMembers.simsFor({ targetType: "fleet", targetId: f }).sort(byText)).toEqual(
              [...(covered[i] ?? [])].sort(byText),
            );
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it("throws for a SIM whose history was not loaded, never answering null", () => {
    const r = resolverOver(
      { assignments: [], sims: [] },
      loadedFleets({ histories: new Map([[SIMS[0] as string, []]]), sims: new Map() }),
    );
    expect(() => r.resolve(SIMS[1] as string, BASE)).toThrow(/not loaded/);
    expect(() => r.simsFor({ targetType: "fleet", targetId: FLEETS[0] as string })).toThrow(
      /not loaded/,
    );
  });
});
