import {
  type AssignOps,
  assignSteps,
  type HourBytes,
  importSteps,
  listAssignments,
  previewSteps,
  sqliteDirectory,
} from "../../customers/customers.ts";
import { sqliteFleets } from "../../customers/fleets.ts";
import type { Db } from "../../db/client.ts";
import { type Assignment, assignments } from "../../db/schema.ts";
import {
  type AssignmentsPort,
  type SyncAssignments,
  settledAssignments,
} from "../assignments-port.ts";
import { runSync, type Steps } from "../steps.ts";

// The SQLite side of the assignments port: the step bodies of src/customers/customers.ts run
// synchronously in one IMMEDIATE transaction each. IMMEDIATE because assign and import read and
// then write: a deferred transaction fails its first write at once with SQLITE_BUSY (no busy wait)
// when another connection, such as the worker's reporter, holds the write lock or committed after
// its first read; an immediate one waits for the lock (the busy timeout) before it reads. The
// preview, which writes nothing, takes the same lock so that it reads between two writers, as an
// assign would. Nothing marks hours dirty here: the planner finds new assignments by the
// assignment watermark (report_assignment_id) and re-plans their SIMs' hours.

/** The statements of AssignOps on one connection, prepared on first use. */
export function sqliteAssignOps(db: Db): AssignOps {
  const c = db.$client;
  let fleetMembers: ReturnType<typeof prepareMembers> | undefined;
  let usageOfSim: ReturnType<typeof prepareUsage> | undefined;
  function prepareMembers() {
    return c
      .prepare<[string], string>(
        "select distinct sim_sid from sim_fleet_hours where fleet_sid = ? order by sim_sid",
      )
      .pluck();
  }
  function prepareUsage() {
    return c.prepare<[string], HourBytes>(
      "select hour, bytes from usage_hourly where sim_sid = ? and bytes != 0 order by hour",
    );
  }
  return {
    directory: () => sqliteDirectory(db),
    simsInFleets(fleets) {
      fleetMembers ??= prepareMembers();
      const stmt = fleetMembers;
      return new Map(fleets.map((f) => [f, stmt.all(f)]));
    },
    fleetsOf: (sims) => sqliteFleets(db, new Set(sims)),
    usageOfSims(sims) {
      usageOfSim ??= prepareUsage();
      const stmt = usageOfSim;
      return new Map(sims.map((s) => [s, stmt.all(s)]));
    },
    insert(rows): Assignment[] {
      return rows.map((r) => db.insert(assignments).values(r).returning().get());
    },
  };
}

/**
 * The port's bodies, synchronous: each one IMMEDIATE transaction (what sqliteAssignments wraps;
 * also what test seeds use to map SIMs in a SQLite file synchronously).
 */
export function sqliteAssignmentsSync(db: Db): SyncAssignments {
  const ops = sqliteAssignOps(db);
  const inTx = <R>(steps: () => Steps<AssignOps, R>): R =>
    db.transaction(() => runSync(steps(), ops), { behavior: "immediate" });
  return {
    list: () => listAssignments(db),
    preview: (added, now) => inTx(() => previewSteps(added, now)),
    assign: (input, now, o) => inTx(() => assignSteps(input, now, o.rebill)),
    importRows: (targetType, rows, now, o) =>
      inTx(() => importSteps(targetType, rows, now, o.rebill)),
  };
}

export function sqliteAssignments(db: Db): AssignmentsPort {
  return settledAssignments(sqliteAssignmentsSync(db));
}
