import { parse } from "csv-parse/sync";
import { asc } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { type Assignment, assignments, sims, usageHourly } from "../db/schema.ts";
import { parseUtcTime } from "../lib/time.ts";
import {
  type AssignmentLike,
  coveringCustomer,
  effectiveHour,
  type FleetObservation,
  firstCoverage,
  type SimHistory,
  type TargetType,
} from "./resolve.ts";

export class InputError extends Error {
  override name = "InputError";
}

const PATTERNS: Record<TargetType, { re: RegExp; what: string }> = {
  sim: { re: /^HS[0-9a-fA-F]{32}$/, what: "a Super SIM SID (HS + 32 hex digits)" },
  iccid: { re: /^[0-9]{18,22}F?$/, what: "an ICCID (18 to 22 digits)" },
  fleet: { re: /^HF[0-9a-fA-F]{32}$/, what: "a Fleet SID (HF + 32 hex digits)" },
};
const CUSTOMER = /^cus_[A-Za-z0-9]{1,64}$/;

export type AssignInput = {
  targetType: TargetType;
  targetId: string;
  customerId: string;
  effectiveFrom?: number;
};

export function validateAssignment(input: AssignInput): string | null {
  const p = PATTERNS[input.targetType];
  if (!p.re.test(input.targetId)) return `${JSON.stringify(input.targetId)} is not ${p.what}`;
  if (!CUSTOMER.test(input.customerId))
    return `${JSON.stringify(input.customerId)} is not a Stripe customer id (cus_…)`;
  if (input.effectiveFrom !== undefined && !Number.isFinite(input.effectiveFrom))
    return "effective time is not a valid time";
  return null;
}

function insertAssignment(db: Db, input: AssignInput, now: number): Assignment {
  return db
    .insert(assignments)
    .values({
      targetType: input.targetType,
      targetId: input.targetId,
      customerId: input.customerId,
      effectiveFrom: effectiveHour(input.effectiveFrom ?? now),
      createdAt: now,
    })
    .returning()
    .get();
}

/** Raised when an assignment would bill already-counted hours to another customer. */
export class RebillRequired extends InputError {
  override name = "RebillRequired";
  constructor(readonly moves: Move[]) {
    super(
      `this would move ${moves.reduce((s, m) => s + m.bytes, 0)} counted bytes in ${moves.length} SIM-hour(s) to another customer:\n  ${describeMoves(moves).join("\n  ")}\nnothing changed; to re-bill that usage, run again with --rebill (or give an effective time that moves nothing)`,
    );
  }
}

/**
 * Records who pays for a SIM, ICCID or fleet from a time on (default: now). An assignment that
 * would move usage already attributed to one customer to another is refused unless `rebill` is
 * set: history changes customer only when an operator asks for it (previewMoves shows what a
 * re-bill moves).
 */
export function assignCustomer({
  db,
  input,
  now,
  rebill = false,
}: {
  db: Db;
  input: AssignInput;
  now: number;
  rebill?: boolean;
}): Assignment {
  const problem = validateAssignment(input);
  if (problem) throw new InputError(problem);
  return db.transaction(
    () => {
      const moves = previewMoves(db, [input], now);
      if (moves.length > 0 && !rebill) throw new RebillRequired(moves);
      return insertAssignment(db, input, now);
    },
    { behavior: "immediate" },
  );
}

export type ImportResult = {
  imported: number;
  errors: { line: number; message: string }[];
  /** usage the import moves (or, refused without rebill, would move) to another customer */
  moves: Move[];
};

const TARGET_COLUMNS: Record<string, TargetType> = {
  sim_sid: "sim",
  sim_iccid: "iccid",
  fleet_sid: "fleet",
};

/**
 * Imports a CSV with a header of one of sim_sid, sim_iccid, fleet_sid, plus stripe_customer_id and
 * optionally effective_from. All rows or none: any bad row aborts the import with its line number.
 */
export function importCustomersCsv({
  db,
  csv,
  now,
  rebill = false,
}: {
  db: Db;
  csv: string;
  now: number;
  rebill?: boolean;
}): ImportResult {
  let parsed: { record: string[]; info: { lines: number }; raw: string }[];
  try {
    parsed = parse(csv, {
      skip_empty_lines: true,
      trim: true,
      bom: true, // spreadsheet "CSV UTF-8" exports start with a byte order mark
      relax_column_count: false,
      info: true,
      raw: true,
    }) as unknown as typeof parsed;
  } catch (err) {
    return {
      imported: 0,
      errors: [{ line: (err as { lines?: number }).lines ?? 0, message: (err as Error).message }],
      moves: [],
    };
  }
  // csv-parse reports the line a record ends on; operators need the line it starts on.
  const startLine = (p: (typeof parsed)[number]) =>
    p.info.lines -
    (p.raw
      .replace(/^[\r\n]+/, "")
      .replace(/\r?\n$/, "")
      .match(/\n/g)?.length ?? 0);
  const records = parsed.map((p) => p.record);
  const header = (records[0] ?? []).map((h) => h.toLowerCase());
  const targets = header.filter((h) => h in TARGET_COLUMNS);
  const errors: { line: number; message: string }[] = [];
  const unknown = header.filter(
    (h) => !(h in TARGET_COLUMNS) && h !== "stripe_customer_id" && h !== "effective_from",
  );
  if (targets.length !== 1 || !header.includes("stripe_customer_id") || unknown.length > 0) {
    return {
      imported: 0,
      errors: [
        {
          line: parsed[0] ? startLine(parsed[0]) : 1,
          message: `header must hold exactly one of sim_sid, sim_iccid, fleet_sid, plus stripe_customer_id (optional effective_from); got ${JSON.stringify(header.join(","))}`,
        },
      ],
      moves: [],
    };
  }
  const targetCol = header.indexOf(targets[0] as string);
  const customerCol = header.indexOf("stripe_customer_id");
  const effCol = header.indexOf("effective_from");
  const targetType = TARGET_COLUMNS[targets[0] as string] as TargetType;
  const rows: AssignInput[] = [];
  parsed.slice(1).forEach((p) => {
    const rec = p.record;
    const line = startLine(p);
    let eff: number | undefined;
    let badTime: string | null = null;
    if (effCol >= 0 && rec[effCol]) {
      try {
        eff = parseUtcTime(rec[effCol] as string, "effective_from");
      } catch (err) {
        badTime = (err as Error).message;
      }
    }
    const input: AssignInput = {
      targetType,
      targetId: rec[targetCol] ?? "",
      customerId: rec[customerCol] ?? "",
      ...(eff !== undefined ? { effectiveFrom: eff } : {}),
    };
    const problem = badTime ?? validateAssignment(input);
    if (problem) errors.push({ line, message: problem });
    else rows.push(input);
  });
  if (errors.length > 0) return { imported: 0, errors, moves: [] };
  return db.transaction(
    () => {
      const moves = previewMoves(db, rows, now);
      if (moves.length > 0 && !rebill) {
        return {
          imported: 0,
          errors: [{ line: 0, message: new RebillRequired(moves).message }],
          moves,
        };
      }
      for (const input of rows) insertAssignment(db, input, now);
      return { imported: rows.length, errors: [], moves };
    },
    { behavior: "immediate" },
  );
}

export function listAssignments(db: Db): Assignment[] {
  return db
    .select()
    .from(assignments)
    .orderBy(asc(assignments.targetType), asc(assignments.targetId), asc(assignments.effectiveFrom))
    .all();
}

export type SimInfo = { simSid: string; iccid: string; fleetSid: string | null };

/**
 * Builds a resolver over all assignments and the recorded fleet history, for resolving many
 * (SIM, hour) pairs in one pass. An hour's customer follows src/customers/resolve.ts: what was
 * true during that hour, never the SIM's current fleet. Fleet history is read per SIM and hour
 * (two indexed lookups); a SIM's whole history is read only when nothing covers the hour.
 */
export function customerResolver(db: Db) {
  const all = db.select().from(assignments).all();
  const byTarget = new Map<string, AssignmentLike[]>();
  for (const a of all) {
    const key = `${a.targetType}:${a.targetId}`;
    const list = byTarget.get(key) ?? [];
    list.push(a);
    byTarget.set(key, list);
  }
  const simRows = new Map<string, SimInfo>();
  const byIccid = new Map<string, string[]>();
  for (const s of db
    .select({ simSid: sims.simSid, iccid: sims.iccid, fleetSid: sims.fleetSid })
    .from(sims)
    .all()) {
    simRows.set(s.simSid, s);
    byIccid.set(s.iccid, [...(byIccid.get(s.iccid) ?? []), s.simSid]);
  }
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
  const atHour = c.prepare<[string, number], { fleetSid: string }>(
    "select fleet_sid as fleetSid from sim_fleet_hours where sim_sid = ? and hour = ?",
  );
  const wholeHistory = c.prepare<[string], FleetObservation>(
    "select hour, fleet_sid as fleetSid from sim_fleet_hours where sim_sid = ? order by hour",
  );
  const simsInFleet = c
    .prepare<[string], string>("select distinct sim_sid from sim_fleet_hours where fleet_sid = ?")
    .pluck();
  const fleetAssignments = (fleetSid: string) => byTarget.get(`fleet:${fleetSid}`) ?? [];
  const simRow = c.prepare<[string], SimInfo>(
    "select sim_sid as simSid, iccid, fleet_sid as fleetSid from sims where sim_sid = ?",
  );
  const ownCache = new Map<string, AssignmentLike[]>();
  const own = (simSid: string): AssignmentLike[] => {
    let list = ownCache.get(simSid);
    if (list) return list;
    // A SIM first seen after this resolver was built (planning runs in chunks beside ingest).
    let info = simRows.get(simSid);
    if (!info) {
      info = simRow.get(simSid);
      if (info) simRows.set(simSid, info);
    }
    list = [
      ...(byTarget.get(`sim:${simSid}`) ?? []),
      ...(info ? (byTarget.get(`iccid:${info.iccid}`) ?? []) : []),
    ];
    ownCache.set(simSid, list);
    return list;
  };
  /** The observations fleetAt consults for `hour`: the latest observed hour at or before it, and the one before. */
  const nearFleets = (simSid: string, hour: number): FleetObservation[] => {
    const at = latestAtOrBefore.get(simSid, hour)?.hour ?? firstObserved.get(simSid)?.hour ?? null;
    if (at === null) return [];
    const prev = latestBefore.get(simSid, at)?.hour ?? null;
    const out: FleetObservation[] = [];
    const before = prev === null ? [] : atHour.all(simSid, prev);
    const here = atHour.all(simSid, at);
    // Two move hours in a row (a SIM flapping between fleets): fleetAt walks the chain back.
    if (here.length > 1 && before.length > 1) return history(simSid).fleets as FleetObservation[];
    for (const r of before) out.push({ hour: prev as number, fleetSid: r.fleetSid });
    for (const r of here) out.push({ hour: at, fleetSid: r.fleetSid });
    return out;
  };
  const historyCache = new Map<string, SimHistory>();
  const history = (simSid: string): SimHistory => {
    let h = historyCache.get(simSid);
    if (!h) {
      h = { own: own(simSid), fleets: wholeHistory.all(simSid), fleetAssignments };
      historyCache.set(simSid, h);
    }
    return h;
  };
  const firstCache = new Map<string, ReturnType<typeof firstCoverage>>();
  /** Rule 3 of customerAt: an hour before the SIM was first covered goes to that first customer. */
  const beforeFirstCoverage = (simSid: string, hour: number): string | null => {
    if (!firstCache.has(simSid)) firstCache.set(simSid, firstCoverage(history(simSid)));
    const first = firstCache.get(simSid);
    return first && hour < first.hour ? first.customerId : null;
  };
  return {
    resolve(simSid: string, hour: number): string | null {
      const mine = own(simSid);
      const covering = coveringCustomer(
        { own: mine, fleets: nearFleets(simSid, hour), fleetAssignments },
        hour,
      );
      return covering ?? beforeFirstCoverage(simSid, hour);
    },
    /** the customers of many hours of one SIM, from its whole history read once */
    resolveHours(simSid: string, hours: readonly number[]): (string | null)[] {
      const h = history(simSid);
      return hours.map((hour) => coveringCustomer(h, hour) ?? beforeFirstCoverage(simSid, hour));
    },
    /** everything that decides the SIM's customer (for explaining and for re-bill previews) */
    history,
    /** SIMs that an assignment's target covers (a fleet: every SIM ever seen in it) */
    simsFor(a: Pick<Assignment, "targetType" | "targetId">): string[] {
      if (a.targetType === "sim") return simRows.has(a.targetId) ? [a.targetId] : [];
      if (a.targetType === "iccid") return byIccid.get(a.targetId) ?? [];
      return simsInFleet.all(a.targetId);
    },
  };
}

export type CustomerResolver = ReturnType<typeof customerResolver>;

/** Usage of one SIM-hour that a change of assignments would bill to another customer. */
export type Move = { simSid: string; hour: number; bytes: number; from: string; to: string | null };

/**
 * What a set of new assignments would move: every SIM-hour with usage whose customer changes from
 * one customer to another (or to nobody). Hours that had no customer and gain one are not moves:
 * that is unbilled usage being billed.
 */
export function previewMoves(db: Db, added: readonly AssignInput[], now: number): Move[] {
  const before = customerResolver(db);
  const simSet = new Set<string>();
  for (const a of added) for (const s of before.simsFor(a)) simSet.add(s);
  if (simSet.size === 0) return [];
  // Resolve against the assignments as they would be, inside a transaction that is rolled back.
  const moves: Move[] = [];
  const rollback = new Error("preview");
  try {
    db.transaction(() => {
      const usage = new Map<string, { hour: number; bytes: number }[]>();
      const bySim = db.$client.prepare<[string], { hour: number; bytes: number }>(
        "select hour, bytes from usage_hourly where sim_sid = ? and bytes != 0 order by hour",
      );
      const oldCustomer = new Map<string, (string | null)[]>();
      for (const sim of simSet) {
        const rows = bySim.all(sim);
        usage.set(sim, rows);
        oldCustomer.set(
          sim,
          before.resolveHours(
            sim,
            rows.map((r) => r.hour),
          ),
        );
      }
      for (const a of added) insertAssignment(db, a, now);
      const after = customerResolver(db);
      for (const [sim, rows] of usage) {
        const old = oldCustomer.get(sim) ?? [];
        const now_ = after.resolveHours(
          sim,
          rows.map((r) => r.hour),
        );
        rows.forEach((r, i) => {
          const from = old[i] ?? null;
          const to = now_[i] ?? null;
          if (from !== null && from !== to)
            moves.push({ simSid: sim, hour: r.hour, bytes: r.bytes, from, to });
        });
      }
      throw rollback;
    });
  } catch (err) {
    if (err !== rollback) throw err;
  }
  return moves;
}

/** One line per SIM and customer pair: "HS… 2026-11-01T00:00Z…2026-11-20T09:00Z 1234 B cus_a → cus_b". */
export function describeMoves(moves: readonly Move[]): string[] {
  const groups = new Map<string, { first: number; last: number; bytes: number; hours: number }>();
  for (const m of moves) {
    const key = `${m.simSid} ${m.from} → ${m.to ?? "(unmapped)"}`;
    const g = groups.get(key) ?? { first: m.hour, last: m.hour, bytes: 0, hours: 0 };
    g.first = Math.min(g.first, m.hour);
    g.last = Math.max(g.last, m.hour);
    g.bytes += m.bytes;
    g.hours++;
    groups.set(key, g);
  }
  return [...groups.entries()].map(
    ([key, g]) =>
      `${key}: ${g.bytes} bytes in ${g.hours} hour(s), ${new Date(g.first).toISOString()} to ${new Date(g.last).toISOString()}`,
  );
}

/** Distinct Stripe customers named by any assignment. */
export function assignmentCustomers(db: Db): string[] {
  return db
    .selectDistinct({ c: assignments.customerId })
    .from(assignments)
    .all()
    .map((r) => r.c);
}

/**
 * Usage that no assignment covers, per SIM: kept, listed by `simmeter usage --unmapped`, and
 * reported as soon as a mapping covers it. The same resolver as the reporter's, so every byte is
 * either billed or listed here.
 */
export function unmappedUsage(db: Db): {
  simSid: string;
  iccid: string | null;
  fleetSid: string | null;
  bytes: number;
  firstHour: string;
  lastHour: string;
}[] {
  const resolver = customerResolver(db);
  const info = new Map(
    db
      .select()
      .from(sims)
      .all()
      .map((s) => [s.simSid, s]),
  );
  const bySim = new Map<string, { hour: number; bytes: number }[]>();
  for (const u of db.select().from(usageHourly).all()) {
    if (u.bytes === 0) continue;
    const list = bySim.get(u.simSid) ?? [];
    list.push(u);
    bySim.set(u.simSid, list);
  }
  const out: ReturnType<typeof unmappedUsage> = [];
  for (const [simSid, rows] of bySim) {
    const customers = resolver.resolveHours(
      simSid,
      rows.map((r) => r.hour),
    );
    let bytes = 0;
    let first = Number.POSITIVE_INFINITY;
    let last = Number.NEGATIVE_INFINITY;
    rows.forEach((r, i) => {
      if (customers[i] !== null) return;
      bytes += r.bytes;
      first = Math.min(first, r.hour);
      last = Math.max(last, r.hour);
    });
    if (bytes === 0 && first === Number.POSITIVE_INFINITY) continue;
    out.push({
      simSid,
      iccid: info.get(simSid)?.iccid ?? null,
      fleetSid: info.get(simSid)?.fleetSid ?? null,
      bytes,
      firstHour: new Date(first).toISOString(),
      lastHour: new Date(last).toISOString(),
    });
  }
  return out;
}
