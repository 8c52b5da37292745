import type { Db } from "../db/client.ts";
import type { FleetObservation } from "./resolve.ts";

// Where the resolver (src/customers/customers.ts resolverOver) reads a SIM's fleet history from
// (docs/design/postgres-ledger.md §4.7). SQLite answers lazily with indexed reads inside the
// caller's transaction; PostgreSQL cannot be read synchronously, so it loads what a question
// needs first: for a planning chunk or a period page only the hours around each (SIM, hour) asked
// about (nearLoaded, from one query), and a SIM's whole history only where the rules need it
// (a SIM flapping between fleets, an hour no assignment covers); for the views, whole histories.

export type SimInfo = { simSid: string; iccid: string; fleetSid: string | null };

/**
 * The fleet side of the customer history, synchronous: over the ledger's statements (SQLite,
 * lazily) or over what was loaded for the SIMs in question. A source must never answer for a SIM
 * it was not given: a lookup outside what it holds throws.
 */
export interface FleetSource {
  /** the row of a SIM absent from the directory (first seen after it was read); undefined: none */
  sim(simSid: string): SimInfo | undefined;
  /**
   * the observations fleetAt consults for `hour` (the latest observed hour at or before it, and
   * the one before); null: use the SIM's whole history
   */
  near(simSid: string, hour: number): readonly FleetObservation[] | null;
  /** every observation of the SIM, by hour then fleet */
  history(simSid: string): readonly FleetObservation[];
  /** whether history(simSid) answers without a further load */
  hasHistory(simSid: string): boolean;
  /** every SIM ever observed in the fleet */
  simsInFleet(fleetSid: string): readonly string[];
}

/**
 * What `near` returns, from the latest observed hour at or before the hour in question (`at`, or
 * the SIM's first observed hour when it has none before; null: never observed) with its fleets,
 * and the observed hour before that one with its fleets. Null when both hours hold several fleets
 * (a SIM flapping between fleets): fleetAt then walks the chain back over the whole history.
 */
export function nearObservations(
  at: number | null,
  atFleets: readonly string[],
  prev: number | null,
  prevFleets: readonly string[],
): FleetObservation[] | null {
  if (at === null) return [];
  if (atFleets.length > 1 && prevFleets.length > 1) return null;
  const out: FleetObservation[] = [];
  if (prev !== null) for (const f of prevFleets) out.push({ hour: prev, fleetSid: f });
  for (const f of atFleets) out.push({ hour: at, fleetSid: f });
  return out;
}

/**
 * The fleet history of a SQLite ledger, read per SIM and hour (two indexed lookups); a SIM's whole
 * history is read only when asked for. `only`: the SIMs it may be asked about (anything else
 * throws, as a loaded source would).
 */
export function sqliteFleets(db: Db, only?: ReadonlySet<string>): FleetSource {
  const c = db.$client;
  const latestAtOrBefore = c.prepare<[string, number], { hour: number | null }>(
    "select max(hour) as hour from sim_fleet_hours where sim_sid = ? and hour <= ?",
  );
  const latestBefore = c.prepare<[string, number], { hour: number | null }>(
    "select max(hour) as hour from sim_fleet_hours where sim_sid = ? and hour < ?",
  );
  const firstObserved = c.prepare<[string], { hour: number | null }>(
    "select min(hour) as hour from sim_fleet_hours where sim_sid = ?",
  );
  const atHour = c
    .prepare<[string, number], string>(
      "select fleet_sid from sim_fleet_hours where sim_sid = ? and hour = ? order by fleet_sid",
    )
    .pluck();
  const wholeHistory = c.prepare<[string], FleetObservation>(
    "select hour, fleet_sid as fleetSid from sim_fleet_hours where sim_sid = ? order by hour, fleet_sid",
  );
  const simsInFleet = c
    .prepare<[string], string>(
      "select distinct sim_sid from sim_fleet_hours where fleet_sid = ? order by sim_sid",
    )
    .pluck();
  const simRow = c.prepare<[string], SimInfo>(
    "select sim_sid as simSid, iccid, fleet_sid as fleetSid from sims where sim_sid = ?",
  );
  const allowed = (simSid: string) => !only || only.has(simSid);
  const check = (simSid: string) => {
    if (!allowed(simSid)) throw new Error(`fleet history of ${simSid} was not loaded`);
  };
  return {
    sim(simSid) {
      check(simSid);
      return simRow.get(simSid);
    },
    near(simSid, hour) {
      check(simSid);
      const at =
        latestAtOrBefore.get(simSid, hour)?.hour ?? firstObserved.get(simSid)?.hour ?? null;
      if (at === null) return [];
      const prev = latestBefore.get(simSid, at)?.hour ?? null;
      return nearObservations(
        at,
        atHour.all(simSid, at),
        prev,
        prev === null ? [] : atHour.all(simSid, prev),
      );
    },
    history(simSid) {
      check(simSid);
      return wholeHistory.all(simSid);
    },
    hasHistory: allowed,
    simsInFleet(fleetSid) {
      return simsInFleet.all(fleetSid);
    },
  };
}

/**
 * A fleet source over loaded data: the whole fleet histories of some SIMs (and their SIM rows,
 * null where the SIM has none), and the members of some fleets. Asking about anything else
 * throws: a planner that forgot to load a SIM must fail, never answer "no fleet".
 */
export function loadedFleets(o: {
  histories?: ReadonlyMap<string, readonly FleetObservation[]>;
  sims?: ReadonlyMap<string, SimInfo | null>;
  fleetMembers?: ReadonlyMap<string, readonly string[]>;
}): FleetSource {
  const histories = o.histories ?? new Map<string, readonly FleetObservation[]>();
  const simsLoaded = o.sims ?? new Map<string, SimInfo | null>();
  const members = o.fleetMembers ?? new Map<string, readonly string[]>();
  return {
    sim(simSid) {
      const s = simsLoaded.get(simSid);
      if (s === undefined) throw new Error(`the SIM row of ${simSid} was not loaded`);
      return s ?? undefined;
    },
    near: () => null,
    history(simSid) {
      const h = histories.get(simSid);
      if (!h) throw new Error(`fleet history of ${simSid} was not loaded`);
      return h;
    },
    hasHistory: (simSid) => histories.has(simSid),
    simsInFleet(fleetSid) {
      const m = members.get(fleetSid);
      if (!m) throw new Error(`the SIMs of fleet ${fleetSid} were not loaded`);
      return m;
    },
  };
}

/** the key of a (SIM, hour) pair in a near map */
export const nearKey = (simSid: string, hour: number) => `${simSid} ${hour}`;

/**
 * A fleet source over what `near` answers for some (SIM, hour) pairs (keyed by nearKey, as
 * nearObservations gives it) and the SIM rows of their SIMs. No whole history is held: `history`
 * throws, and withHistories adds the ones the resolver turns out to need (historiesWanted).
 */
export function nearLoaded(o: {
  near: ReadonlyMap<string, readonly FleetObservation[] | null>;
  sims: ReadonlyMap<string, SimInfo | null>;
}): FleetSource {
  const base = loadedFleets({ sims: o.sims });
  return {
    ...base,
    near(simSid, hour) {
      const n = o.near.get(nearKey(simSid, hour));
      if (n === undefined)
        throw new Error(
          `the fleets of ${simSid} at ${new Date(hour).toISOString()} were not loaded`,
        );
      return n;
    },
  };
}

/** `base` with the whole histories of more SIMs: those answer from `extra`, the rest as before. */
export function withHistories(base: FleetSource, extra: FleetSource): FleetSource {
  return {
    sim: (simSid) => base.sim(simSid),
    near: (simSid, hour) => base.near(simSid, hour),
    history: (simSid) => (extra.hasHistory(simSid) ? extra.history(simSid) : base.history(simSid)),
    hasHistory: (simSid) => extra.hasHistory(simSid) || base.hasHistory(simSid),
    simsInFleet: (fleetSid) => base.simsInFleet(fleetSid),
  };
}
