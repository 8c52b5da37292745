import { hourStart } from "../accounting/buckets.ts";
import type { Candidate } from "./admit.ts";

// Pure: the customer history's rule. Each counted event with a fleet records that its SIM was in
// that fleet during the event's hour (sim_fleet_hours); the SIM is marked for a full re-plan
// (report_dirty_sims) when the observation can change the customer of any other hour: its first
// observation (usage counted before it may now be covered), a fleet change, or an hour observed
// out of order.

/** One counted event's fleet, at its hour. */
export type FleetObservation = { simSid: string; hour: number; fleetSid: string };

/**
 * A SIM's latest observed hour, and its fleet when that hour holds only one (else null). After an
 * out-of-order observation the latest hour is not known here: UNKNOWN sends the SIM's next events
 * down the full path until one of them is the latest again.
 */
export type FleetMark = { latestHour: number; latestFleet: string | null };
export const UNKNOWN: FleetMark = { latestHour: Number.POSITIVE_INFINITY, latestFleet: null };

/** The fleet observations of the candidates new to the ledger, in event order. */
export function fleetObservations(
  candidates: readonly Candidate[],
  fresh: ReadonlySet<string>,
): FleetObservation[] {
  const out: FleetObservation[] = [];
  for (const c of candidates) {
    const e = c.event;
    // fleet_sid may be absent (or unusable): that says nothing about membership.
    if (e.fleetSid === null || !fresh.has(e.eventSid)) continue;
    out.push({ simSid: e.simSid, hour: hourStart(e.timestampMs), fleetSid: e.fleetSid });
  }
  return out;
}

/**
 * Whether an observation of `fleetSid` calls for a re-plan of its SIM, given what the history
 * held once it was recorded: `before`, the fleets of the latest earlier hour ([] when none);
 * `later`, whether a later hour exists; `same`, the fleets now in its own hour.
 */
export function needsReplan(
  inserted: boolean,
  before: readonly string[],
  later: boolean,
  same: number,
  fleetSid: string,
): boolean {
  if (!inserted) return false;
  return later || same > 1 || before.length === 0 || before.some((f) => f !== fleetSid);
}

/** The SIM's mark after an observation recorded down the full path. */
export function markAfter(hour: number, fleetSid: string, later: boolean, same: number): FleetMark {
  if (later) return UNKNOWN;
  return { latestHour: hour, latestFleet: same === 1 ? fleetSid : null };
}

/**
 * The same rule applied to an in-memory copy of the history, in observation order (for a ledger
 * that reads each SIM's rows once per job instead of once per event). `committed` must hold, per
 * SIM, every stored row from the latest hour before its earliest observation in `observations`
 * on. Returns the rows to insert (each new one once) and the SIMs to mark, in first-marked order.
 */
export function replayFleets(
  committed: ReadonlyMap<string, readonly { hour: number; fleetSid: string }[]>,
  observations: readonly FleetObservation[],
): { insert: FleetObservation[]; dirtySims: string[] } {
  const history = new Map<string, Map<number, Set<string>>>();
  const hoursOf = (simSid: string) => {
    let h = history.get(simSid);
    if (!h) {
      h = new Map();
      for (const r of committed.get(simSid) ?? []) {
        const fleets = h.get(r.hour) ?? new Set<string>();
        fleets.add(r.fleetSid);
        h.set(r.hour, fleets);
      }
      history.set(simSid, h);
    }
    return h;
  };
  const insert: FleetObservation[] = [];
  const dirty = new Set<string>();
  for (const o of observations) {
    const h = hoursOf(o.simSid);
    let fleets = h.get(o.hour);
    if (!fleets) {
      fleets = new Set();
      h.set(o.hour, fleets);
    }
    const inserted = !fleets.has(o.fleetSid);
    if (inserted) {
      fleets.add(o.fleetSid);
      insert.push(o);
    }
    let prev = Number.NEGATIVE_INFINITY;
    let later = false;
    for (const hour of h.keys()) {
      if (hour < o.hour && hour > prev) prev = hour;
      else if (hour > o.hour) later = true;
    }
    const before = prev === Number.NEGATIVE_INFINITY ? [] : [...(h.get(prev) ?? [])];
    if (needsReplan(inserted, before, later, fleets.size, o.fleetSid)) dirty.add(o.simSid);
  }
  return { insert, dirtySims: [...dirty] };
}
