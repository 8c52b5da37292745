import { parse } from "csv-parse/sync";
import { asc } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { type Assignment, assignments, sims, usageHourly } from "../db/schema.ts";
import { parseUtcTime } from "../lib/time.ts";
import { type AssignmentLike, effectiveHour, resolveCustomer, type TargetType } from "./resolve.ts";

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

/** Records who pays for a SIM, ICCID or fleet from a time on (default: now). */
export function assignCustomer({
  db,
  input,
  now,
}: {
  db: Db;
  input: AssignInput;
  now: number;
}): Assignment {
  const problem = validateAssignment(input);
  if (problem) throw new InputError(problem);
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

export type ImportResult = { imported: number; errors: { line: number; message: string }[] };

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
}: {
  db: Db;
  csv: string;
  now: number;
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
  if (errors.length > 0) return { imported: 0, errors };
  db.transaction(() => {
    for (const input of rows) assignCustomer({ db, input, now });
  });
  return { imported: rows.length, errors: [] };
}

export function listAssignments(db: Db): Assignment[] {
  return db
    .select()
    .from(assignments)
    .orderBy(asc(assignments.targetType), asc(assignments.targetId), asc(assignments.effectiveFrom))
    .all();
}

export type SimInfo = { simSid: string; iccid: string; fleetSid: string | null };

/** Builds a resolver over all assignments, for resolving many (SIM, hour) pairs in one pass. */
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
  for (const s of db
    .select({ simSid: sims.simSid, iccid: sims.iccid, fleetSid: sims.fleetSid })
    .from(sims)
    .all()) {
    simRows.set(s.simSid, s);
  }
  // Reverse indexes, so mapping a bulk import of assignments to SIMs stays linear.
  const byIccid = new Map<string, string[]>();
  const byFleet = new Map<string, string[]>();
  for (const s of simRows.values()) {
    byIccid.set(s.iccid, [...(byIccid.get(s.iccid) ?? []), s.simSid]);
    if (s.fleetSid) {
      const list = byFleet.get(s.fleetSid) ?? [];
      list.push(s.simSid);
      byFleet.set(s.fleetSid, list);
    }
  }
  const cache = new Map<string, AssignmentLike[]>();
  const forSim = (simSid: string): AssignmentLike[] => {
    let list = cache.get(simSid);
    if (list) return list;
    const info = simRows.get(simSid);
    list = [
      ...(byTarget.get(`sim:${simSid}`) ?? []),
      ...(info ? (byTarget.get(`iccid:${info.iccid}`) ?? []) : []),
      ...(info?.fleetSid ? (byTarget.get(`fleet:${info.fleetSid}`) ?? []) : []),
    ];
    cache.set(simSid, list);
    return list;
  };
  return {
    resolve: (simSid: string, hour: number): string | null => resolveCustomer(forSim(simSid), hour),
    /** SIMs that an assignment's target covers (a fleet covers its SIMs) */
    simsFor(a: Pick<Assignment, "targetType" | "targetId">): string[] {
      if (a.targetType === "sim") return simRows.has(a.targetId) ? [a.targetId] : [];
      return (a.targetType === "iccid" ? byIccid : byFleet).get(a.targetId) ?? [];
    },
  };
}

export type CustomerResolver = ReturnType<typeof customerResolver>;

/** Distinct Stripe customers named by any assignment. */
export function assignmentCustomers(db: Db): string[] {
  return db
    .selectDistinct({ c: assignments.customerId })
    .from(assignments)
    .all()
    .map((r) => r.c);
}

/** Usage of SIMs that no assignment covers: kept, and reported as soon as a mapping exists. */
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
  const out = new Map<string, { bytes: number; first: number; last: number }>();
  for (const u of db.select().from(usageHourly).all()) {
    if (u.bytes === 0 || resolver.resolve(u.simSid, u.hour) !== null) continue;
    const r = out.get(u.simSid) ?? { bytes: 0, first: u.hour, last: u.hour };
    r.bytes += u.bytes;
    r.first = Math.min(r.first, u.hour);
    r.last = Math.max(r.last, u.hour);
    out.set(u.simSid, r);
  }
  return [...out.entries()].map(([simSid, r]) => ({
    simSid,
    iccid: info.get(simSid)?.iccid ?? null,
    fleetSid: info.get(simSid)?.fleetSid ?? null,
    bytes: r.bytes,
    firstHour: new Date(r.first).toISOString(),
    lastHour: new Date(r.last).toISOString(),
  }));
}
