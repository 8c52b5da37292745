import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { type AssignInput, resolverOver } from "../../src/customers/customers.ts";
import { loadedFleets, type SimInfo } from "../../src/customers/fleets.ts";
import type { FleetObservation } from "../../src/customers/resolve.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import type { Assignment } from "../../src/db/schema.ts";
import { ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteAssignmentsSync } from "../../src/ledger/sqlite/assignments.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { defaultSettings } from "./db.ts";
import type { TestLedger } from "./ledger.ts";

// What tests put in place before a simmeter process or the CLI runs: rows in a SQLite file and
// webhook events to deliver.

const FIXTURE = resolve(import.meta.dirname, "../fixtures/constructed-data-session-ended.json");

/** The constructed data-session.ended fixture: 1536 bytes of HS2f71…bd1d in 2022-12-14T13:00Z. */
export const fixtureEvent = () => JSON.parse(readFileSync(FIXTURE, "utf8"))[0] as unknown;

/** Counts the fixture event into the database at `dbPath` (created and migrated if need be), in
 * one replayed delivery `id`, and closes it (so it is checkpointed). */
export function ingestFixture(dbPath: string, id: string): void {
  const db = openDb(dbPath);
  ingestDeliveries(
    { db, stmts: prepareIngest(db), settings: defaultSettings, now: Date.now },
    {
      v: 1,
      deliveries: [{ id, receivedAt: Date.now(), source: "replay", events: [fixtureEvent()] }],
    },
  );
  db.$client.close();
}

/**
 * ingestFixture through the port, on either backend: the fixture event in one replayed delivery
 * `id`, counted with the default settings.
 */
export async function ingestFixtureVia(ledger: Ledger, id: string): Promise<void> {
  await ledger.ingestJob(
    {
      v: 1,
      deliveries: [{ id, receivedAt: Date.now(), source: "replay", events: [fixtureEvent()] }],
    },
    defaultSettings,
    Date.now,
  );
}

export type SimAssignment = {
  sim: string;
  customer: string;
  effectiveFrom: number;
  /** when the assignment is made; default: now */
  now?: number;
};

/**
 * Assigns `sim` to `customer` from `effectiveFrom` (what `simmeter customers assign` does), at
 * once: the SQLite adapter's synchronous body of the port's assign (refused if it moves usage).
 */
export function assignSim(db: Db, a: SimAssignment): void {
  sqliteAssignmentsSync(db).assign(
    {
      targetType: "sim",
      targetId: a.sim,
      customerId: a.customer,
      effectiveFrom: a.effectiveFrom,
    },
    a.now ?? Date.now(),
    { rebill: false },
  );
}

/**
 * assignCustomer at once on a SQLite ledger, for seeds written as synchronous code: the SQLite
 * adapter's own body of the port's assign (validated; RebillRequired unless rebill).
 */
export function assignNow(
  db: Db,
  a: { input: AssignInput; now: number; rebill?: boolean },
): Assignment {
  return sqliteAssignmentsSync(db).assign(a.input, a.now, { rebill: a.rebill ?? false }).assignment;
}

/** assignSim through the port, on either backend (what `simmeter customers assign` does) */
export async function assignSimVia(ledger: Ledger, a: SimAssignment): Promise<void> {
  await ledger.assignments.assign(
    { targetType: "sim", targetId: a.sim, customerId: a.customer, effectiveFrom: a.effectiveFrom },
    a.now ?? Date.now(),
    { rebill: false },
  );
}

/** assignSim in the database file at `dbPath` (created and migrated if need be), then closed. */
export function assignSimInFile(dbPath: string, a: SimAssignment): void {
  const db = openDb(dbPath);
  try {
    assignSim(db, a);
  } finally {
    db.$client.close();
  }
}

const HOUR = 3_600_000;
const ACCOUNT = `AC${"1".repeat(32)}`;

/** One data session of a SIM in the last hours: `n` readings, 1,000 more bytes each. */
export function recentSession(simSid: string, n: number) {
  const start = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;
  const sessionSid = `PI${randomUUID().replaceAll("-", "")}`;
  return Array.from({ length: n }, (_, i) =>
    buildCloudEvent({
      eventSid: `EZ${randomUUID().replaceAll("-", "")}`,
      kind: i === n - 1 ? "data-session.ended" : "data-session.updated",
      accountSid: ACCOUNT,
      simSid,
      iccid: "89883070000005381783",
      timestampMs: start + (i + 1) * 10 * 60_000,
      sessionSid,
      sessionStartMs: start,
      windowStartMs: start,
      windowEndMs: start + (i + 1) * 10 * 60_000,
      cumulativeDown: (i + 1) * 1000,
    }),
  );
}

const MINUTE = 60_000;
/** the account of sessionInHour's events */
const SESSION_ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const hex32 = (n: number) => n.toString(16).padStart(32, "0");

/**
 * One data session of `sim` inside `hour`, its event and session SIDs made from `n`: an update at
 * +10 min, the end at +20 min, `bytes` in total.
 */
export function sessionInHour(sim: string, iccid: string, n: number, hour: number, bytes: number) {
  const start = hour + 5 * MINUTE;
  const readings: [number, number][] = [
    [hour + 10 * MINUTE, Math.floor(bytes / 3)],
    [hour + 20 * MINUTE, bytes],
  ];
  return readings.map(([t, cumulative], i) =>
    buildCloudEvent({
      eventSid: `EZ${hex32(n * 16 + i)}`,
      kind: i === readings.length - 1 ? "data-session.ended" : "data-session.updated",
      accountSid: SESSION_ACCOUNT,
      simSid: sim,
      iccid,
      timestampMs: t,
      sessionSid: `PI${hex32(n)}`,
      sessionStartMs: start,
      windowStartMs: start,
      windowEndMs: t,
      windowDown: 0,
      cumulativeDown: cumulative,
      ...(i === readings.length - 1 ? { sessionEndMs: t } : {}),
    }),
  );
}

/**
 * The customer of `simSid`'s `hour` on either backend: ledger.customers.usageOwned when the SIM
 * has a usage row in that hour; otherwise (an hour without usage) the product's resolver
 * (resolverOver) over what the ledger holds: every assignment (ledger.assignments.list), the
 * SIM's row (ledger.customers.sims) and its whole fleet history (sim_fleet_hours).
 */
export async function customerAt(
  t: Pick<TestLedger, "ledger" | "sql">,
  simSid: string,
  hour: number,
): Promise<string | null> {
  const owned = (await t.ledger.customers.usageOwned(hour, hour + HOUR)).find(
    (u) => u.simSid === simSid,
  );
  if (owned) return owned.customer;
  const assignments = await t.ledger.assignments.list();
  const row = (await t.ledger.customers.sims([simSid])).get(simSid);
  const sim: SimInfo | null = row
    ? { simSid: row.simSid, iccid: row.iccid, fleetSid: row.fleetSid }
    : null;
  const history = (
    await t.sql<{ hour: number; fleetSid: string }>(
      'select hour, fleet_sid as "fleetSid" from sim_fleet_hours where sim_sid = ?',
      simSid,
    )
  )
    .map((r): FleetObservation => ({ hour: Number(r.hour), fleetSid: r.fleetSid }))
    .sort((a, b) =>
      a.hour !== b.hour
        ? a.hour - b.hour
        : a.fleetSid < b.fleetSid
          ? -1
          : a.fleetSid > b.fleetSid
            ? 1
            : 0,
    );
  const fleets = loadedFleets({
    histories: new Map([[simSid, history]]),
    sims: new Map([[simSid, sim]]),
  });
  return resolverOver({ assignments, sims: sim ? [sim] : [] }, fleets).resolve(simSid, hour);
}
