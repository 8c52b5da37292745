import { parse } from "csv-parse/sync";
import { asc } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { type Assignment, assignments, sims, usageHourly } from "../db/schema.ts";
import type { AssignmentsPort } from "../ledger/assignments-port.ts";
import { calls, type Steps } from "../ledger/steps.ts";
import { parseUtcTime } from "../lib/time.ts";
import { type FleetSource, loadedFleets, type SimInfo, sqliteFleets } from "./fleets.ts";
import {
  type AssignmentLike,
  coveringCustomer,
  effectiveHour,
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

/** An assignment as it is stored (without its id): the effective time rounded up to the hour. */
export type NewAssignment = Omit<Assignment, "id">;

export function newAssignment(input: AssignInput, now: number): NewAssignment {
  return {
    targetType: input.targetType,
    targetId: input.targetId,
    customerId: input.customerId,
    effectiveFrom: effectiveHour(input.effectiveFrom ?? now),
    createdAt: now,
  };
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

/** The ledger side a use case needs: the assignments port (src/ledger/assignments-port.ts). */
export type AssignmentsLedger = { readonly assignments: AssignmentsPort };

/** What an assignment did: the row, the usage it re-billed, the unmapped bytes it now bills. */
export type Assigned = {
  assignment: Assignment;
  /** usage moved to another customer (empty unless rebill) */
  moves: Move[];
  /** unmapped bytes before minus after (negative: the assignment left more usage unmapped) */
  unmappedBilled: number;
};

/**
 * Records who pays for a SIM, ICCID or fleet from a time on (default: now). An assignment that
 * would move usage already attributed to one customer to another is refused unless `rebill` is
 * set: history changes customer only when an operator asks for it (previewMoves shows what a
 * re-bill moves). One transaction of the ledger (assignment writers are serial).
 */
export async function assignCustomer({
  ledger,
  input,
  now,
  rebill = false,
}: {
  ledger: AssignmentsLedger;
  input: AssignInput;
  now: number;
  rebill?: boolean;
}): Promise<Assigned> {
  const problem = validateAssignment(input);
  if (problem) throw new InputError(problem);
  return ledger.assignments.assign(input, now, { rebill });
}

export type ImportError = { line: number; message: string };

export type ImportResult = {
  /** assignments added (0 when the import was refused) */
  imported: number;
  /** rows identical to an assignment already in effect (same target, customer and hour): skipped */
  unchanged: number;
  /** every problem found, each bad row with its line number (0: the file as a whole) */
  errors: ImportError[];
  /** usage the import moves (or, refused without rebill, would move) to another customer */
  moves: Move[];
  /** the effective hours of the added assignments, earliest first, distinct */
  effectiveFrom: number[];
};

const TARGET_COLUMNS: Record<string, TargetType> = {
  sim_sid: "sim",
  sim_iccid: "iccid",
  fleet_sid: "fleet",
};

type ParsedRecord = { record: string[]; info: { lines: number }; raw: string };

/** csv-parse reports the line a record ends on; operators need the line it starts on. */
function startLine(endLine: number, raw: string | undefined): number {
  if (raw === undefined) return endLine;
  return (
    endLine -
    (raw
      .replace(/^[\r\n]+/, "")
      .replace(/\r?\n$/, "")
      .match(/\n/g)?.length ?? 0)
  );
}

/**
 * Imports a CSV with a header of one of sim_sid, sim_iccid, fleet_sid, plus stripe_customer_id and
 * optionally effective_from (blank: now). All rows or none: every bad row is reported with its
 * line number, in one pass, and then nothing is imported.
 *
 * Idempotent: a row that the assignments already say is skipped as unchanged, so importing the
 * same file twice adds nothing. That is a row whose target's own assignment in effect at the row's
 * effective hour names the same customer, with nothing in between that the row would override
 * (an assignment of the SIM's ICCID, or of the ICCID's SIM, taking effect since).
 */
export async function importCustomersCsv({
  ledger,
  csv,
  now,
  rebill = false,
}: {
  ledger: AssignmentsLedger;
  csv: string;
  now: number;
  rebill?: boolean;
}): Promise<ImportResult> {
  const refused = (errors: ImportError[]): ImportResult => ({
    imported: 0,
    unchanged: 0,
    errors,
    moves: [],
    effectiveFrom: [],
  });
  const errors: ImportError[] = [];
  let parsed: ParsedRecord[];
  let quoteError = false;
  try {
    parsed = parse(csv, {
      skip_empty_lines: true,
      trim: true,
      bom: true, // spreadsheet "CSV UTF-8" exports start with a byte order mark
      // Field counts are checked below, row by row, so every short or long row is reported.
      relax_column_count: true,
      info: true,
      raw: true,
      // A broken quote: reported, and parsing goes on where it can.
      skip_records_with_error: true,
      on_skip: (err: { message: string; lines?: number } | undefined, chunk?: string) => {
        if (!err || quoteError) return;
        // After a broken quote the rest of the file cannot be split into records reliably.
        quoteError = true;
        errors.push({
          line: startLine(err.lines ?? 0, chunk),
          message: `${err.message} (lines after it could not be read as CSV)`,
        });
      },
    }) as unknown as ParsedRecord[];
  } catch (err) {
    return refused([
      { line: (err as { lines?: number }).lines ?? 0, message: (err as Error).message },
    ]);
  }
  const lineOf = (p: ParsedRecord) => startLine(p.info.lines, p.raw);
  const header = (parsed[0]?.record ?? []).map((h) => h.toLowerCase());
  const targets = header.filter((h) => h in TARGET_COLUMNS);
  const unknown = header.filter(
    (h) => !(h in TARGET_COLUMNS) && h !== "stripe_customer_id" && h !== "effective_from",
  );
  if (targets.length !== 1 || !header.includes("stripe_customer_id") || unknown.length > 0) {
    return refused([
      {
        line: parsed[0] ? lineOf(parsed[0]) : 1,
        message: `header must hold exactly one of sim_sid, sim_iccid, fleet_sid, plus stripe_customer_id (optional effective_from); got ${JSON.stringify(header.join(","))}`,
      },
    ]);
  }
  const targetCol = header.indexOf(targets[0] as string);
  const customerCol = header.indexOf("stripe_customer_id");
  const effCol = header.indexOf("effective_from");
  const targetType = TARGET_COLUMNS[targets[0] as string] as TargetType;
  const rows: (ImportRow & { line: number })[] = [];
  for (const p of parsed.slice(1)) {
    const rec = p.record;
    const line = lineOf(p);
    if (rec.length !== header.length) {
      errors.push({
        line,
        message: `${rec.length} field(s), the header has ${header.length} (${header.join(",")})`,
      });
      continue;
    }
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
    else rows.push({ line, input, hour: effectiveHour(eff ?? now) });
  }
  // The same target twice in the file from the same hour, to different customers: which one?
  const firstAt = new Map<string, { line: number; customerId: string }>();
  for (const r of rows) {
    const key = `${r.input.targetId}@${r.hour}`;
    const first = firstAt.get(key);
    if (!first) firstAt.set(key, { line: r.line, customerId: r.input.customerId });
    else if (first.customerId !== r.input.customerId)
      errors.push({
        line: r.line,
        message: `${r.input.targetId} is assigned from ${new Date(r.hour).toISOString()} to ${first.customerId} on line ${first.line} and to ${r.input.customerId} here: keep one`,
      });
  }
  if (errors.length > 0) return refused(errors.sort((a, b) => a.line - b.line));
  return ledger.assignments.importRows(targetType, rows, now, { rebill });
}

/** A valid row of an import: the assignment and the whole hour it takes effect from. */
export type ImportRow = { input: AssignInput; hour: number };

/**
 * Decides, for rows of one target type, whether an assignment would change nothing: the target's
 * own assignment in effect at `hour` (ties: the newest row, as the resolver) names the same
 * customer, and no assignment of a counterpart target (for a SIM, its ICCIDs; for an ICCID, its
 * SIMs) takes effect between that assignment and `hour` (the new row would override it there).
 */
function unchangedAssignments(dir: CustomerDirectory, targetType: TargetType) {
  const all = dir.assignments;
  type Entry = { customerId: string; effectiveFrom: number; order: number };
  const byTarget = new Map<string, Entry[]>();
  const push = (type: string, id: string, e: Entry) => {
    const key = `${type}:${id}`;
    const list = byTarget.get(key);
    if (list) list.push(e);
    else byTarget.set(key, [e]);
  };
  for (const a of all)
    push(a.targetType, a.targetId, {
      customerId: a.customerId,
      effectiveFrom: a.effectiveFrom,
      order: a.id,
    });
  let order = Number.MAX_SAFE_INTEGER / 2;
  // The SIM <-> ICCID pairs, from the directory's SIM rows.
  const iccidsOf = new Map<string, string[]>();
  const simsOf = new Map<string, string[]>();
  for (const s of dir.sims) {
    iccidsOf.set(s.simSid, [...(iccidsOf.get(s.simSid) ?? []), s.iccid]);
    simsOf.set(s.iccid, [...(simsOf.get(s.iccid) ?? []), s.simSid]);
  }
  const counterparts = (id: string): string[] => {
    if (targetType === "sim") return (iccidsOf.get(id) ?? []).map((x) => `iccid:${x}`);
    if (targetType === "iccid") return (simsOf.get(id) ?? []).map((x) => `sim:${x}`);
    return [];
  };
  return {
    isUnchanged(id: string, customerId: string, hour: number): boolean {
      let best: Entry | undefined;
      for (const e of byTarget.get(`${targetType}:${id}`) ?? []) {
        if (e.effectiveFrom > hour) continue;
        if (
          !best ||
          e.effectiveFrom > best.effectiveFrom ||
          (e.effectiveFrom === best.effectiveFrom && e.order > best.order)
        )
          best = e;
      }
      if (!best || best.customerId !== customerId) return false;
      const since = best.effectiveFrom;
      return !counterparts(id).some((key) =>
        (byTarget.get(key) ?? []).some((e) => e.effectiveFrom >= since && e.effectiveFrom <= hour),
      );
    },
    add(id: string, customerId: string, hour: number): void {
      push(targetType, id, { customerId, effectiveFrom: hour, order: order++ });
    },
  };
}

/** Every assignment of a SQLite ledger, by target type, target, effective time and id. */
export function listAssignments(db: Db): Assignment[] {
  return db
    .select()
    .from(assignments)
    .orderBy(
      asc(assignments.targetType),
      asc(assignments.targetId),
      asc(assignments.effectiveFrom),
      asc(assignments.id),
    )
    .all();
}

/** An assignment as the resolver reads it. */
export type DirectoryAssignment = Pick<
  Assignment,
  "id" | "targetType" | "targetId" | "customerId" | "effectiveFrom"
>;

/**
 * Everything that decides customers except the fleet observations: every assignment and every
 * SIM's row. Read once per resolver (a planning run reads it in its first transaction).
 */
export type CustomerDirectory = {
  assignments: readonly DirectoryAssignment[];
  sims: readonly SimInfo[];
};

/** Every assignment and SIM row of a SQLite ledger. */
export function sqliteDirectory(db: Db): CustomerDirectory {
  return {
    assignments: db.select().from(assignments).all(),
    sims: db
      .select({ simSid: sims.simSid, iccid: sims.iccid, fleetSid: sims.fleetSid })
      .from(sims)
      .all(),
  };
}

/**
 * Builds a resolver over all assignments and the recorded fleet history, for resolving many
 * (SIM, hour) pairs in one pass. An hour's customer follows src/customers/resolve.ts: what was
 * true during that hour, never the SIM's current fleet. On SQLite, fleet history is read per SIM
 * and hour (two indexed lookups); a SIM's whole history is read only when nothing covers the hour.
 */
export function customerResolver(db: Db) {
  return resolverOver(sqliteDirectory(db), sqliteFleets(db));
}

/** The resolver's logic over a directory and a fleet source (pure when the source is loaded). */
export function resolverOver(dir: CustomerDirectory, fleets: FleetSource) {
  const byTarget = new Map<string, AssignmentLike[]>();
  for (const a of dir.assignments) {
    const key = `${a.targetType}:${a.targetId}`;
    const list = byTarget.get(key) ?? [];
    list.push(a);
    byTarget.set(key, list);
  }
  const simRows = new Map<string, SimInfo>();
  const byIccid = new Map<string, string[]>();
  for (const s of dir.sims) {
    simRows.set(s.simSid, s);
    byIccid.set(s.iccid, [...(byIccid.get(s.iccid) ?? []), s.simSid]);
  }
  const fleetAssignments = (fleetSid: string) => byTarget.get(`fleet:${fleetSid}`) ?? [];
  const ownCache = new Map<string, AssignmentLike[]>();
  const own = (simSid: string): AssignmentLike[] => {
    let list = ownCache.get(simSid);
    if (list) return list;
    // A SIM first seen after the directory was read (planning runs in chunks beside ingest).
    let info = simRows.get(simSid);
    if (!info) {
      info = fleets.sim(simSid);
      if (info) simRows.set(simSid, info);
    }
    list = [
      ...(byTarget.get(`sim:${simSid}`) ?? []),
      ...(info ? (byTarget.get(`iccid:${info.iccid}`) ?? []) : []),
    ];
    ownCache.set(simSid, list);
    return list;
  };
  const historyCache = new Map<string, SimHistory>();
  const history = (simSid: string): SimHistory => {
    let h = historyCache.get(simSid);
    if (!h) {
      h = { own: own(simSid), fleets: fleets.history(simSid), fleetAssignments };
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
      const near = fleets.near(simSid, hour) ?? history(simSid).fleets;
      const covering = coveringCustomer({ own: mine, fleets: near, fleetAssignments }, hour);
      return covering ?? beforeFirstCoverage(simSid, hour);
    },
    /**
     * The SIMs among `pairs` whose resolve would read a whole history the source does not hold:
     * a SIM flapping between fleets at the hour, or an hour no assignment covers (rule 3 looks for
     * the SIM's first coverage). Load those (withHistories) before resolving the pairs.
     */
    historiesWanted(pairs: readonly { simSid: string; hour: number }[]): string[] {
      const out = new Set<string>();
      for (const { simSid, hour } of pairs) {
        if (out.has(simSid) || fleets.hasHistory(simSid)) continue;
        const near = fleets.near(simSid, hour);
        if (
          near === null ||
          !coveringCustomer({ own: own(simSid), fleets: near, fleetAssignments }, hour)
        )
          out.add(simSid);
      }
      return [...out].sort(byText);
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
      return [...fleets.simsInFleet(a.targetId)];
    },
  };
}

export type CustomerResolver = ReturnType<typeof resolverOver>;

/** Usage of one SIM-hour that a change of assignments would bill to another customer. */
export type Move = { simSid: string; hour: number; bytes: number; from: string; to: string | null };

/** What adding assignments would do to counted usage: nothing is written to find out. */
export type AssignPreview = {
  /** usage whose customer changes from one customer to another (or to nobody) */
  moves: Move[];
  /** unmapped bytes before minus after (negative: the assignments leave more unmapped) */
  unmappedBilled: number;
};

/**
 * What a set of new assignments would move: every SIM-hour with usage whose customer changes from
 * one customer to another (or to nobody). Hours that had no customer and gain one are not moves:
 * that is unbilled usage being billed.
 */
export async function previewMoves(
  ledger: AssignmentsLedger,
  added: readonly AssignInput[],
  now: number,
): Promise<Move[]> {
  return (await ledger.assignments.preview(added, now)).moves;
}

/** a SIM's counted hours (bytes != 0), by hour */
export type HourBytes = { hour: number; bytes: number };

/**
 * The statement layer of assigning, previewing and importing (docs/design/postgres-ledger.md
 * §2.3): each op is called at most once per transaction, with arrays. The SQLite adapter runs the
 * steps synchronously in one IMMEDIATE transaction, the PostgreSQL one in one transaction under
 * the shared ledger barrier and the assignment writers' lock.
 */
export interface AssignOps {
  /** every assignment and SIM row */
  directory(): CustomerDirectory;
  /** fleet → every SIM ever observed in it (every fleet asked for is a key), SIMs in binary order */
  simsInFleets(fleets: readonly string[]): Map<string, string[]>;
  /** the fleet histories and SIM rows of these SIMs, as a source that answers for them only */
  fleetsOf(sims: readonly string[]): FleetSource;
  /** the counted hours of these SIMs (every SIM asked for is a key) */
  usageOfSims(sims: readonly string[]): Map<string, HourBytes[]>;
  /** inserts the rows in this order; returns them as stored, in the same order */
  insert(rows: readonly NewAssignment[]): Assignment[];
}

const op = calls<AssignOps>();

/** text in binary order (SQLite's BINARY, PostgreSQL's "C") */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Compares the customers of the SIMs' counted hours before and after `added` (pure): the "after"
 * resolver reads the directory plus the added rows, each with an id above every stored one, as
 * they would be stored (the newest row wins a tie at the same hour).
 */
export function compareAssignments(
  dir: CustomerDirectory,
  fleets: FleetSource,
  sims: readonly string[],
  usage: ReadonlyMap<string, readonly HourBytes[]>,
  added: readonly NewAssignment[],
): AssignPreview {
  const before = resolverOver(dir, fleets);
  let maxId = 0;
  for (const a of dir.assignments) maxId = Math.max(maxId, a.id);
  const after = resolverOver(
    {
      assignments: [
        ...dir.assignments,
        ...added.map((a, i) => ({
          id: maxId + 1 + i,
          targetType: a.targetType,
          targetId: a.targetId,
          customerId: a.customerId,
          effectiveFrom: a.effectiveFrom,
        })),
      ],
      sims: dir.sims,
    },
    fleets,
  );
  const moves: Move[] = [];
  let unmappedBilled = 0;
  for (const sim of sims) {
    const rows = usage.get(sim) ?? [];
    const hours = rows.map((r) => r.hour);
    const old = before.resolveHours(sim, hours);
    const now_ = after.resolveHours(sim, hours);
    rows.forEach((r, i) => {
      const from = old[i] ?? null;
      const to = now_[i] ?? null;
      if (from !== null && from !== to)
        moves.push({ simSid: sim, hour: r.hour, bytes: r.bytes, from, to });
      if (from === null && to !== null) unmappedBilled += r.bytes;
      else if (from !== null && to === null) unmappedBilled -= r.bytes;
    });
  }
  return { moves, unmappedBilled };
}

/** What `added` would move and bill, over the directory read in the same transaction. */
function* compareSteps(
  dir: CustomerDirectory,
  added: readonly NewAssignment[],
): Steps<AssignOps, AssignPreview> {
  const fleets = [
    ...new Set(added.filter((a) => a.targetType === "fleet").map((a) => a.targetId)),
  ].sort(byText);
  const members =
    fleets.length > 0 ? yield* op("simsInFleets", fleets) : new Map<string, string[]>();
  const cover = resolverOver(dir, loadedFleets({ fleetMembers: members }));
  const simSet = new Set<string>();
  for (const a of added) for (const s of [...cover.simsFor(a)].sort(byText)) simSet.add(s);
  if (simSet.size === 0) return { moves: [], unmappedBilled: 0 };
  const sims = [...simSet];
  const source = yield* op("fleetsOf", sims);
  const usage = yield* op("usageOfSims", sims);
  return compareAssignments(dir, source, sims, usage, added);
}

/** previewMoves as steps: what adding these assignments would move and bill. */
export function* previewSteps(
  added: readonly AssignInput[],
  now: number,
): Steps<AssignOps, AssignPreview> {
  const dir = yield* op("directory");
  return yield* compareSteps(
    dir,
    added.map((a) => newAssignment(a, now)),
  );
}

/** assignCustomer as steps: refused (RebillRequired) when it would move usage without rebill. */
export function* assignSteps(
  input: AssignInput,
  now: number,
  rebill: boolean,
): Steps<AssignOps, Assigned> {
  const problem = validateAssignment(input);
  if (problem) throw new InputError(problem);
  const row = newAssignment(input, now);
  const dir = yield* op("directory");
  const p = yield* compareSteps(dir, [row]);
  if (p.moves.length > 0 && !rebill) throw new RebillRequired(p.moves);
  const [assignment] = yield* op("insert", [row]);
  return { assignment: assignment as Assignment, ...p };
}

/**
 * The transaction of an import: rows already in effect are unchanged, the rest added unless they
 * would move usage without rebill (then nothing is added, and the moves are reported).
 */
export function* importSteps(
  targetType: TargetType,
  rows: readonly ImportRow[],
  now: number,
  rebill: boolean,
): Steps<AssignOps, ImportResult> {
  const dir = yield* op("directory");
  const unchangedCheck = unchangedAssignments(dir, targetType);
  const added: AssignInput[] = [];
  let unchanged = 0;
  for (const r of rows) {
    if (unchangedCheck.isUnchanged(r.input.targetId, r.input.customerId, r.hour)) unchanged++;
    else {
      const input = { ...r.input, effectiveFrom: r.hour };
      added.push(input);
      unchangedCheck.add(input.targetId, input.customerId, r.hour);
    }
  }
  const toAdd = added.map((a) => newAssignment(a, now));
  const { moves } = yield* compareSteps(dir, toAdd);
  if (moves.length > 0 && !rebill) {
    return {
      imported: 0,
      unchanged: 0,
      errors: [{ line: 0, message: new RebillRequired(moves).message }],
      moves,
      effectiveFrom: [],
    };
  }
  if (toAdd.length > 0) yield* op("insert", toAdd);
  return {
    imported: added.length,
    unchanged,
    errors: [],
    moves,
    effectiveFrom: [...new Set(added.map((a) => a.effectiveFrom as number))].sort((a, b) => a - b),
  };
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
 * One SIM's unmapped usage (the hours the resolver gives no customer), or null when it has none:
 * what `usage --unmapped` lists, from the SIM's usage rows with bytes, on either ledger.
 */
export function unmappedOfSim(
  resolver: Pick<CustomerResolver, "resolveHours">,
  simSid: string,
  rows: readonly { hour: number; bytes: number }[],
  info: Pick<SimInfo, "iccid" | "fleetSid"> | undefined,
): ReturnType<typeof unmappedUsage>[number] | null {
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
  if (first === Number.POSITIVE_INFINITY) return null;
  return {
    simSid,
    iccid: info?.iccid ?? null,
    fleetSid: info?.fleetSid ?? null,
    bytes,
    firstHour: new Date(first).toISOString(),
    lastHour: new Date(last).toISOString(),
  };
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
  // One read transaction: one snapshot while a worker writes.
  return db.$client.transaction(() => {
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
      const u = unmappedOfSim(resolver, simSid, rows, info.get(simSid));
      if (u) out.push(u);
    }
    return out;
  })();
}
