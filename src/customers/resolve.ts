// Pure: which Stripe customer pays for a SIM's usage in a given hour bucket, decided by what was
// true during that hour (docs/adr/0005-customer-history.md).

export type TargetType = "sim" | "iccid" | "fleet";

export type AssignmentLike = {
  targetType: TargetType;
  customerId: string;
  effectiveFrom: number;
  id: number;
};

/** A fleet the SIM's events named in an hour. */
export type FleetObservation = { hour: number; fleetSid: string };

/** Everything that decides a SIM's customer: its own assignments, its fleets over time, theirs. */
export type SimHistory = {
  /** the SIM's own assignments (by sim_sid and ICCID) */
  own: readonly AssignmentLike[];
  /** the fleets the SIM's events named, sorted by hour (several in an hour the SIM moved in) */
  fleets: readonly FleetObservation[];
  /** a fleet's assignments */
  fleetAssignments: (fleetSid: string) => readonly AssignmentLike[];
};

const HOUR_MS = 3_600_000;

function latestInEffect(list: readonly AssignmentLike[], hour: number): AssignmentLike | undefined {
  let best: AssignmentLike | undefined;
  for (const a of list) {
    if (a.effectiveFrom > hour) continue;
    if (
      !best ||
      a.effectiveFrom > best.effectiveFrom ||
      (a.effectiveFrom === best.effectiveFrom && a.id > best.id)
    )
      best = a;
  }
  return best;
}

/** The distinct fleets observed at fleets[i].hour, for i the first index of that hour. */
function setAt(fleets: readonly FleetObservation[], i: number): { set: string[]; start: number } {
  const hour = (fleets[i] as FleetObservation).hour;
  let start = i;
  while (start > 0 && (fleets[start - 1] as FleetObservation).hour === hour) start--;
  const set = new Set<string>();
  for (let j = start; j < fleets.length && (fleets[j] as FleetObservation).hour === hour; j++)
    set.add((fleets[j] as FleetObservation).fleetSid);
  return { set: [...set].sort(), start };
}

/** Index of the first observation of the latest observed hour at or before `hour` (else 0). */
function groupAtOrBefore(fleets: readonly FleetObservation[], hour: number): number {
  let lo = 0;
  let hi = fleets.length - 1;
  let found = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if ((fleets[mid] as FleetObservation).hour <= hour) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return setAt(fleets, found).start;
}

/**
 * For the observed hour group starting at `i`: the fleet the SIM came from (the fleet it was in
 * when the hour began) and the one it was in when the hour ended. An hour with one fleet has both
 * the same. In an hour with several (a move), the SIM came from the fleet it had left the previous
 * observed hour in, and left in another one; when that is unknown, the smallest fleet SID, so the
 * answer depends only on the observations, never on arrival order. Consecutive move hours (a SIM
 * flapping between fleets) are walked iteratively.
 */
function cameFromAndExit(
  fleets: readonly FleetObservation[],
  i: number,
): { cameFrom: string; exit: string } {
  const chain: string[][] = [];
  let start = i;
  for (;;) {
    const g = setAt(fleets, start);
    chain.push(g.set);
    if (g.set.length === 1 || g.start === 0) break;
    start = setAt(fleets, g.start - 1).start;
  }
  // Oldest first: the oldest group is a single fleet (or the first observation of all).
  let exit: string | null = null;
  let cameFrom = "";
  for (let k = chain.length - 1; k >= 0; k--) {
    const set = chain[k] as string[];
    cameFrom = exit !== null && set.includes(exit) ? exit : (set[0] as string);
    exit = set.length === 1 ? (set[0] as string) : (set.find((f) => f !== cameFrom) ?? cameFrom);
  }
  return { cameFrom, exit: exit as string };
}

/**
 * The fleet the SIM was in during `hour` (null when no event ever named one):
 * - an hour with one observed fleet: that fleet;
 * - an hour in which the SIM moved (several fleets): the fleet it came from, as an assignment that
 *   takes effect inside an hour leaves that hour with the previous customer;
 * - an hour without events: the fleet it was in at the end of the latest observed hour before it
 *   (after a move, the fleet it moved to); before its first event, its first observed fleet.
 * `fleets` is sorted by hour. Only the latest observed hour at or before `hour` matters, and the
 * hours before it only while they are move hours too.
 */
export function fleetAt(fleets: readonly FleetObservation[], hour: number): string | null {
  if (fleets.length === 0) return null;
  const i = groupAtOrBefore(fleets, hour);
  const at = (fleets[i] as FleetObservation).hour;
  const { cameFrom, exit } = cameFromAndExit(fleets, i);
  return hour <= at ? cameFrom : exit;
}

/** The customer whose assignment covers the SIM at `hour`: its own first, then its fleet's then. */
export function coveringCustomer(h: SimHistory, hour: number): string | null {
  const own = latestInEffect(h.own, hour);
  if (own) return own.customerId;
  const fleet = fleetAt(h.fleets, hour);
  if (!fleet) return null;
  return latestInEffect(h.fleetAssignments(fleet), hour)?.customerId ?? null;
}

/**
 * The first hour at which any assignment covers the SIM, with its customer. Coverage can only
 * begin where an assignment takes effect or where the SIM's fleet changes, so those are the only
 * hours tried.
 */
export function firstCoverage(h: SimHistory): { hour: number; customerId: string } | null {
  const candidates = new Set<number>();
  for (const a of h.own) candidates.add(a.effectiveFrom);
  const fleetSids = new Set(h.fleets.map((f) => f.fleetSid));
  for (const f of fleetSids) for (const a of h.fleetAssignments(f)) candidates.add(a.effectiveFrom);
  for (const f of h.fleets) {
    candidates.add(f.hour);
    candidates.add(f.hour + HOUR_MS);
  }
  for (const hour of [...candidates].sort((a, b) => a - b)) {
    const customerId = coveringCustomer(h, hour);
    if (customerId) return { hour, customerId };
  }
  return null;
}

/**
 * The customer for the hour bucket starting at `hour`:
 * 1. the SIM's own assignment (sim_sid or ICCID) in effect at the start of the hour;
 * 2. otherwise the assignment in effect then of the fleet the SIM was in during that hour;
 * 3. usage from before the SIM was first covered by any assignment goes to that first customer,
 *    so a SIM that sent data before it was mapped is billed once a mapping exists;
 * 4. otherwise nobody: the usage is unmapped and listed by `simmeter usage --unmapped` (a SIM that
 *    left every assigned fleet, for example).
 * An assignment is in effect from the first whole hour at or after its effective time. The SIM's
 * current fleet plays no part: moving a SIM never moves the hours it already used.
 */
export function customerAt(h: SimHistory, hour: number): string | null {
  const covering = coveringCustomer(h, hour);
  if (covering) return covering;
  const first = firstCoverage(h);
  return first && hour < first.hour ? first.customerId : null;
}

/**
 * The same rules for a SIM that was always in one fleet: `assignments` holds its own and that
 * fleet's assignments.
 */
export function resolveCustomer(
  assignments: readonly AssignmentLike[],
  hour: number,
): string | null {
  const fleet = assignments.filter((a) => a.targetType === "fleet");
  return customerAt(
    {
      own: assignments.filter((a) => a.targetType !== "fleet"),
      fleets: fleet.length > 0 ? [{ hour: Number.MIN_SAFE_INTEGER, fleetSid: "HF" }] : [],
      fleetAssignments: () => fleet,
    },
    hour,
  );
}

/** Rounds an effective time up to the hour boundary from which it applies. */
export function effectiveHour(t: number): number {
  return Math.ceil(t / HOUR_MS) * HOUR_MS;
}
