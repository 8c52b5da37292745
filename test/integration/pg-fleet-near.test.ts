// The fleets around a (SIM, hour) on PostgreSQL (fleetsNear in src/ledger/pg/plan.ts,
// docs/design/postgres-ledger.md §4.7) against SQLite's lazy statements (sqliteFleets in
// src/customers/fleets.ts): on random histories with move hours, flapping, SIMs never observed and
// hours before the first observation, every pair's `near` answer is the same on both ledgers, and
// resolverSteps asks for whole histories only for the SIMs whose pairs the rules resolve over them.
import fc from "fast-check";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolverOver } from "../../src/customers/customers.ts";
import { sqliteFleets } from "../../src/customers/fleets.ts";
import { coveringCustomer } from "../../src/customers/resolve.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import { pgPlanOps } from "../../src/ledger/pg/plan.ts";
import { runAsync } from "../../src/ledger/steps.ts";
import { resolverSteps } from "../../src/reporting/plan-steps.ts";
import { testPgPool } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const BASE = Date.UTC(2026, 0, 1);
const SIMS = [0, 1, 2, 3, 4].map((i) => `HS${String(i).repeat(32)}`);
const FLEETS = [`HF${"7".repeat(32)}`, `HF${"2".repeat(32)}`, `HF${"c".repeat(32)}`];
const ICCID = "89883070000005381781";

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const obs = fc.record({
  sim: fc.integer({ min: 0, max: 3 }), // SIM 4 is never observed
  hour: fc.integer({ min: 0, max: 10 }),
  fleet: fc.integer({ min: 0, max: 2 }),
});
const pair = fc.record({
  sim: fc.integer({ min: 0, max: 4 }),
  hour: fc.integer({ min: -2, max: 13 }),
});

describe("fleetsNear on PostgreSQL", () => {
  let db: Db;
  let pool: pg.Pool;
  beforeAll(async () => {
    db = openDb(":memory:");
    cleanup.push(async () => {
      db.$client.close();
    });
    ({ pool } = await testPgPool(cleanup, 2));
  });

  /** the same rows in both ledgers: sims rows for SIMs 0 to 2, the observations, assignments */
  async function load(
    observations: readonly { sim: number; hour: number; fleet: number }[],
    assigned: readonly { type: "sim" | "fleet"; idx: number; hour: number }[],
  ) {
    db.$client.exec("delete from sim_fleet_hours; delete from sims; delete from assignments;");
    await pool.query("truncate sim_fleet_hours, sims, assignments");
    const seen = new Set<string>();
    const rows = observations.filter((o) => {
      const k = `${o.sim}:${o.hour}:${o.fleet}`;
      return !seen.has(k) && seen.add(k);
    });
    for (let i = 0; i < 3; i++) {
      const sim = SIMS[i] as string;
      db.$client
        .prepare(
          "insert into sims (sim_sid, iccid, fleet_sid, account_sid, first_seen_at, last_event_at) values (?, ?, null, 'AC', 0, 0)",
        )
        .run(sim, ICCID);
      await pool.query(
        "insert into sims (sim_sid, iccid, fleet_sid, account_sid, first_seen_at, last_event_at) values ($1, $2, null, 'AC', 0, 0)",
        [sim, ICCID],
      );
    }
    for (const o of rows) {
      const v = [SIMS[o.sim], BASE + o.hour * HOUR, FLEETS[o.fleet]];
      db.$client
        .prepare("insert into sim_fleet_hours (sim_sid, hour, fleet_sid) values (?, ?, ?)")
        .run(...v);
      await pool.query(
        "insert into sim_fleet_hours (sim_sid, hour, fleet_sid) values ($1, $2, $3)",
        v,
      );
    }
    for (const [i, a] of assigned.entries()) {
      const v = [
        i + 1,
        a.type,
        a.type === "sim" ? SIMS[a.idx] : FLEETS[a.idx % 3],
        `cus_${i}`,
        BASE + a.hour * HOUR,
      ];
      db.$client
        .prepare(
          "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values (?, ?, ?, ?, ?, 0)",
        )
        .run(...v);
      await pool.query(
        "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, $2, $3, $4, $5, 0)",
        v,
      );
    }
  }

  it("answers every pair as SQLite's statements do, and resolverSteps loads whole histories only where the rules read them", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(obs, { maxLength: 30 }),
        fc.uniqueArray(pair, {
          minLength: 1,
          maxLength: 40,
          selector: (p) => `${p.sim}:${p.hour}`,
        }),
        fc.array(
          fc.record({
            type: fc.constantFrom<"sim" | "fleet">("sim", "fleet"),
            idx: fc.integer({ min: 0, max: 4 }),
            hour: fc.integer({ min: -2, max: 12 }),
          }),
          { maxLength: 5 },
        ),
        async (observations, rawPairs, assigned) => {
          await load(observations, assigned);
          const pairs = rawPairs.map((p) => ({
            simSid: SIMS[p.sim] as string,
            hour: BASE + p.hour * HOUR,
          }));
          const lazy = sqliteFleets(db);
          const c = await pool.connect();
          try {
            const ops = pgPlanOps(c);
            const near = await ops.fleetsNear(pairs);
            for (const p of pairs) {
              expect(near.near(p.simSid, p.hour), `${p.simSid} ${p.hour}`).toEqual(
                lazy.near(p.simSid, p.hour),
              );
              expect(near.hasHistory(p.simSid)).toBe(false);
              expect(() => near.history(p.simSid)).toThrow(/not loaded/);
              expect(near.sim(p.simSid)).toEqual(
                db.$client
                  .prepare(
                    "select sim_sid as simSid, iccid, fleet_sid as fleetSid from sims where sim_sid = ?",
                  )
                  .get(p.simSid),
              );
            }
            // A pair never asked about is refused, never answered "no fleet".
            expect(() => near.near(SIMS[0] as string, BASE + 99 * HOUR)).toThrow(/not loaded/);

            const dir = await ops.directory();
            const asked: string[][] = [];
            const resolver = await runAsync(resolverSteps(dir, pairs), {
              fleetsNear: (x) => ops.fleetsNear(x),
              fleetsOf: (sims) => {
                asked.push([...sims]);
                return ops.fleetsOf(sims);
              },
            });
            const reference = resolverOver(dir, sqliteFleets(db));
            // Whole histories only for SIMs whose pair is flapping or not covered (rule 3).
            const wanted = new Set<string>();
            for (const p of pairs) {
              const n = lazy.near(p.simSid, p.hour);
              const own = dir.assignments.filter(
                (a) => a.targetType === "sim" && a.targetId === p.simSid,
              );
              const covered =
                n !== null &&
                coveringCustomer(
                  {
                    own,
                    fleets: n,
                    fleetAssignments: (f) =>
                      dir.assignments.filter((a) => a.targetType === "fleet" && a.targetId === f),
                  },
                  p.hour,
                ) !== null;
              if (!covered) wanted.add(p.simSid);
            }
            expect(asked.flat().sort()).toEqual([...wanted].sort());
            expect(asked.length).toBeLessThanOrEqual(1);
            for (const p of pairs)
              expect(resolver.resolve(p.simSid, p.hour), `${p.simSid} ${p.hour}`).toBe(
                reference.resolve(p.simSid, p.hour),
              );
          } finally {
            c.release();
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
