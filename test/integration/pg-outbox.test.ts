// The PostgreSQL outbox, billing and retention (src/ledger/pg/outbox.ts, billing.ts,
// retention.ts) against the SQLite adapter (src/ledger/sqlite/index.ts), both with their real
// migrations, nothing mocked: the same rows seeded into both, the same operations run through
// both, the results and every ledger table compared after each step. Also: batched retention
// (pruneExpired and prunePg with tiny batches) equals one big batch, and two concurrent prunePg.
import pg from "pg";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { DAY_MS, HOUR_MS } from "../../src/accounting/buckets.ts";
import type { CustomerBilling } from "../../src/billing/periods.ts";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { PRUNED_BEFORE, type PruneResult, pruneExpired } from "../../src/ingest/prune.ts";
import { pgBilledCustomers, pgBilling } from "../../src/ledger/pg/billing.ts";
import { pgOutbox } from "../../src/ledger/pg/outbox.ts";
import { prunePg } from "../../src/ledger/pg/retention.ts";
import type { Ledger, OutboxPort } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { createTestDatabase, testPgPool } from "../helpers/pg.ts";

const NOW = Date.UTC(2026, 10, 27, 12, 0, 0);
const H0 = NOW - (NOW % HOUR_MS);

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

type Sqlite = ReturnType<typeof openDb>;
type Row = Record<string, unknown>;

// --- seeding and dumps -----------------------------------------------------------------------

/** the same rows into both ledgers, in the same order (so ids and row ids agree too) */
async function seed(db: Sqlite, pool: pg.Pool, table: string, rows: Row[]): Promise<void> {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0] as Row);
  const list = cols.map((c) => `"${c}"`).join(", ");
  const ins = db.$client.prepare(
    `insert into "${table}" (${list}) values (${cols.map(() => "?").join(", ")})`,
  );
  for (const r of rows) {
    ins.run(...cols.map((c) => (typeof r[c] === "boolean" ? Number(r[c]) : r[c])));
    await pool.query(
      `insert into "${table}" (${list}) values (${cols.map((_, i) => `$${i + 1}`).join(", ")})`,
      cols.map((c) => r[c]),
    );
  }
}

const TABLES = [
  "meter_reports",
  "report_dirty_hours",
  "billing_customers",
  "assignments",
  "seen_events",
  "sessions",
  "readings",
  "meta",
];

async function columnsOf(pool: pg.Pool, table: string): Promise<string[]> {
  const r = await pool.query<{ column_name: string }>(
    `select column_name from information_schema.columns
      where table_schema = 'public' and table_name = $1 order by ordinal_position`,
    [table],
  );
  return r.rows.map((x) => x.column_name);
}

/** booleans as SQLite's 0/1, rows in a fixed order; meter_reports.row_id is SQLite's rowid */
function normalise(rows: Row[]): Row[] {
  const out = rows.map((r) => {
    const o: Row = {};
    for (const [k, v] of Object.entries(r)) o[k] = typeof v === "boolean" ? Number(v) : v;
    return o;
  });
  const key = (r: Row) => JSON.stringify(r);
  return out.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

async function dumpBoth(db: Sqlite, pool: pg.Pool): Promise<{ lite: Row; pg: Row }> {
  const lite: Row = {};
  const pgd: Row = {};
  for (const t of TABLES) {
    const cols = await columnsOf(pool, t);
    const sel = (c: string) => (t === "meter_reports" && c === "row_id" ? "rowid" : `"${c}"`);
    lite[t] = normalise(
      db.$client
        .prepare(`select ${cols.map((c) => `${sel(c)} as "${c}"`).join(", ")} from "${t}"`)
        .all() as Row[],
    );
    pgd[t] = normalise(
      (await pool.query(`select ${cols.map((c) => `"${c}"`).join(", ")} from "${t}"`)).rows,
    );
  }
  return { lite, pg: pgd };
}

async function expectSameTables(db: Sqlite, pool: pg.Pool): Promise<void> {
  const d = await dumpBoth(db, pool);
  expect(d.pg).toEqual(d.lite);
}

// --- rows --------------------------------------------------------------------------------------

type ReportSeed = {
  customer: string;
  hour: number;
  seq: number;
  state: "pending" | "sent" | "failed" | "superseded";
  value?: number;
  late?: boolean;
  kind?: "usage" | "observed";
  inDoubt?: boolean;
  firstCallAt?: number | null;
  attempts?: number;
  sentAt?: number | null;
};

const idOf = (customer: string, hour: number, seq: number) => `${customer}-${hour}-${seq}`;

function report(s: ReportSeed): Row {
  return {
    identifier: idOf(s.customer, s.hour, s.seq),
    customer_id: s.customer,
    hour: s.hour,
    seq: s.seq,
    value: s.value ?? 1000 + s.seq,
    timestamp: Math.floor(s.hour / 1000) + 60 * s.seq,
    late: s.late ?? false,
    kind: s.kind ?? "usage",
    state: s.state,
    attempts: s.attempts ?? (s.state === "pending" ? 0 : 1),
    in_doubt: s.inDoubt ?? false,
    first_call_at: s.firstCallAt ?? null,
    last_error: null,
    created_at: s.hour + 1,
    sent_at: s.sentAt ?? (s.state === "sent" ? s.hour + 2 : null),
  };
}

// Customers whose order differs between bytewise and linguistic collations.
const A = "cus_B";
const B = "cus_a";
const C = "cus_\u00e9";
const D = "cus_Z";

// --- the outbox --------------------------------------------------------------------------------

describe("pgOutbox equals the SQLite outbox", () => {
  let db: Sqlite;
  let pool: pg.Pool;
  let lite: Ledger;
  let pgo: OutboxPort;

  beforeEach(async () => {
    db = openDb(":memory:");
    cleanup.push(async () => {
      db.$client.close();
    });
    ({ pool } = await testPgPool(cleanup));
    lite = sqliteLedger(db);
    pgo = pgOutbox(pool);
  });

  /** the same call on both; the results must agree, then every table */
  async function both<T>(f: (o: OutboxPort) => Promise<T>): Promise<T> {
    const a = await f(lite.outbox);
    const b = await f(pgo);
    expect(b).toEqual(a);
    await expectSameTables(db, pool);
    return b;
  }

  it("lists, claims and changes rows with the same results and the same tables", async () => {
    const rows: ReportSeed[] = [
      { customer: B, hour: H0 - HOUR_MS, seq: 0, state: "sent" },
      { customer: B, hour: H0 - HOUR_MS, seq: 1, state: "pending" },
      { customer: B, hour: H0, seq: 0, state: "pending" },
      { customer: A, hour: H0, seq: 1, state: "pending", late: true },
      { customer: A, hour: H0, seq: 0, state: "superseded" },
      { customer: A, hour: H0 - 2 * HOUR_MS, seq: 0, state: "pending", inDoubt: true },
      { customer: C, hour: H0, seq: 0, state: "failed" },
      { customer: C, hour: H0 - HOUR_MS, seq: 3, state: "failed" },
      { customer: C, hour: H0 - HOUR_MS, seq: 2, state: "failed" },
      { customer: D, hour: H0, seq: 0, state: "pending", firstCallAt: NOW - 5 },
      { customer: D, hour: H0, seq: 1, state: "pending" },
    ];
    await seed(db, pool, "meter_reports", rows.map(report));
    await expectSameTables(db, pool);

    const pending = await both((o) => o.pending());
    expect(pending.map((r) => r.customerId)).toEqual([A, A, D, D, B, B]);
    expect(typeof pending[0]?.late).toBe("boolean");
    expect(typeof pending[0]?.value).toBe("number");
    const failed = await both((o) => o.failed());
    // ties on (customer, hour) keep insertion (rowid) order: seq 3 was written before seq 2
    expect(failed.map((r) => r.seq)).toEqual([3, 2, 0]);
    await both((o) => o.status());

    const pend = idOf(B, H0, 0);
    const sent = idOf(B, H0 - HOUR_MS, 0);
    const superseded = idOf(A, H0, 0);
    const failedId = idOf(C, H0, 0);
    expect((await both((o) => o.pendingRow(pend)))?.identifier).toBe(pend);
    expect(await both((o) => o.pendingRow(sent))).toBeNull();
    expect(await both((o) => o.pendingRow("nope"))).toBeNull();

    // claimForCall: only a pending row; the first call time is kept across claims
    expect(await both((o) => o.claimForCall(superseded, NOW))).toBe(false);
    expect(await both((o) => o.claimForCall(sent, NOW))).toBe(false);
    expect(await both((o) => o.claimForCall("nope", NOW))).toBe(false);
    expect(await both((o) => o.claimForCall(pend, NOW))).toBe(true);
    expect(await both((o) => o.claimForCall(pend, NOW + 10))).toBe(true);
    expect(await both((o) => o.claimForCall(idOf(D, H0, 0), NOW))).toBe(true);

    // a refused call puts the row back (first call time cleared); a claimed one stays in doubt
    await both((o) => o.setInDoubt(pend, false));
    await both((o) => o.setInDoubt(idOf(D, H0, 1), true));

    // markUnconfirmed: only a pending row
    await both((o) => o.markUnconfirmed(failedId, NOW));
    await both((o) => o.markUnconfirmed(superseded, NOW));
    await both((o) => o.markUnconfirmed(idOf(D, H0, 0), NOW + 1));

    // markSent: only a pending row
    await both((o) => o.markSent(failedId, NOW));
    await both((o) => o.markSent(pend, NOW + 2));
    await both((o) => o.recordAttempt(idOf(A, H0, 1), "429 rate limited"));
    await both((o) => o.recordAttempt(idOf(A, H0, 1), "503"));
    await both((o) => o.markFailed(idOf(A, H0, 1), "400 no such customer"));
    await both((o) => o.failed());
    await both((o) => o.status());

    // retryFailed: every stopped row back to pending, its hour dirty
    await seed(db, pool, "report_dirty_hours", [{ hour: H0 }]);
    expect(await both((o) => o.retryFailed())).toBe(4);
    expect(await both((o) => o.retryFailed())).toBe(0);
    const dirty = await pool.query<{ hour: number }>(
      "select hour from report_dirty_hours order by hour",
    );
    expect(dirty.rows.map((r) => r.hour)).toEqual([H0 - HOUR_MS, H0]);
    await both((o) => o.pending());
    const status = await both((o) => o.status());
    expect(status.map((s) => s.state)).toEqual(["pending", "sent", "superseded"]);
  });

  it("status is numbers: value and late 0 when there are none", async () => {
    expect(await both((o) => o.status())).toEqual([]);
    await seed(db, pool, "meter_reports", [
      report({ customer: A, hour: H0, seq: 0, state: "pending", value: 0 }),
      report({ customer: A, hour: H0, seq: 1, state: "pending", value: -5, late: true }),
      report({ customer: B, hour: H0, seq: 0, state: "sent", value: 2 ** 40 }),
    ]);
    const s = await both((o) => o.status());
    expect(s).toEqual([
      { state: "pending", rows: 2, value: -5, late: 1 },
      { state: "sent", rows: 1, value: 2 ** 40, late: 0 },
    ]);
  });

  it("compaction folds exactly as SQLite's, group by group", async () => {
    const old = (d: number) => H0 - d * DAY_MS;
    const rows: ReportSeed[] = [];
    for (const customer of [A, B, C]) {
      for (const d of [40, 41, 50]) {
        for (let seq = 0; seq < 4; seq++)
          rows.push({ customer, hour: old(d), seq, state: "sent", attempts: seq + 1 });
      }
    }
    // not folded: a pending row, a late row, an observed row, a single row, a recent hour
    rows.push({ customer: D, hour: old(45), seq: 0, state: "sent" });
    rows.push({ customer: D, hour: old(45), seq: 1, state: "pending" });
    rows.push({ customer: D, hour: old(46), seq: 0, state: "sent" });
    rows.push({ customer: D, hour: old(46), seq: 1, state: "sent", late: true });
    rows.push({ customer: D, hour: old(47), seq: 0, state: "sent" });
    rows.push({ customer: D, hour: old(47), seq: 1, state: "sent", kind: "observed" });
    rows.push({ customer: D, hour: old(48), seq: 0, state: "sent" });
    rows.push({ customer: D, hour: old(2), seq: 0, state: "sent" });
    rows.push({ customer: D, hour: old(2), seq: 1, state: "sent" });
    // a superseded row among sent ones: the group is kept as it is
    rows.push({ customer: D, hour: old(49), seq: 0, state: "superseded" });
    rows.push({ customer: D, hour: old(49), seq: 1, state: "sent" });
    // shuffled so insertion order is not key order
    rows.sort(
      (a, b) => ((a.seq * 7 + a.hour / HOUR_MS) % 5) - ((b.seq * 7 + b.hour / HOUR_MS) % 5),
    );
    await seed(db, pool, "meter_reports", rows.map(report));

    // a limited pass takes the same groups as SQLite's (by hour, then customer)
    expect(await both((o) => o.compact(NOW, 1))).toBe(3);
    expect(await both((o) => o.compact(NOW, 2))).toBe(6);
    expect(await both((o) => o.compact(NOW))).toBe(18);
    expect(await both((o) => o.compact(NOW))).toBe(0);
    const left = await pool.query<{ n: number }>("select count(*) as n from meter_reports");
    expect(left.rows[0]?.n).toBe(9 + 11);
    await both((o) => o.status());
  });

  it("a row change never leaves synchronous_commit changed on a pooled session", async () => {
    const db2 = await createTestDatabase();
    cleanup.push(db2.drop);
    const lax = new pg.Pool({
      connectionString: db2.url,
      max: 1,
      options: "-c synchronous_commit=off",
    });
    // an idle connection ended by the server (the database dropped at the end) is not an error here
    lax.on("error", () => {});
    cleanup.push(() => lax.end());
    await lax.query(
      `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late,
         state, created_at) values ('x', 'c', 0, 0, 1, 0, false, 'pending', 0)`,
    );
    const o = pgOutbox(lax);
    expect(await o.claimForCall("x", 5)).toBe(true);
    await o.markSent("x", 6);
    expect(await o.retryFailed()).toBe(0);
    const r = await lax.query<{ s: string }>("select current_setting('synchronous_commit') as s");
    expect(r.rows[0]?.s).toBe("off");
    const inStatement = await lax.query<{ s: string }>(
      "select current_setting('synchronous_commit') as s from (select set_config('synchronous_commit', 'on', true)) x",
    );
    expect(inStatement.rows[0]?.s).toBe("on");
    const after = await lax.query<{ s: string }>(
      "select current_setting('synchronous_commit') as s",
    );
    expect(after.rows[0]?.s).toBe("off");
  });

  it("a claim and a supersede of one pending row: exactly one of them wins", async () => {
    for (let i = 0; i < 20; i++)
      await pool.query(
        `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late,
           state, created_at) values ($1, 'c', $2, 0, 1, 0, false, 'pending', 0)`,
        [`r${i}`, i],
      );
    const supersede = (id: string) =>
      pool.query(
        `update meter_reports set state = 'superseded'
          where identifier = $1 and state = 'pending' and in_doubt = false`,
        [id],
      );
    for (let i = 0; i < 20; i++) {
      const [claimed, sup] = await Promise.all([
        pgo.claimForCall(`r${i}`, NOW),
        supersede(`r${i}`),
      ]);
      expect(Number(claimed) + (sup.rowCount ?? 0)).toBe(1);
    }
  });
});

// --- billing and customers ---------------------------------------------------------------------

describe("pgBilling and pgBilledCustomers equal the SQLite adapter's", () => {
  it("stores and loads billing state, previous period or none, and lists billed customers", async () => {
    const db = openDb(":memory:");
    cleanup.push(async () => {
      db.$client.close();
    });
    const { pool } = await testPgPool(cleanup);
    const lite = sqliteLedger(db);
    const pgb = pgBilling(pool);
    const ok = (customerId: string, previous: CustomerBilling["previous"]): CustomerBilling => ({
      customerId,
      state: "ok",
      detail: null,
      subscriptionId: `sub_${customerId}`,
      itemId: `si_${customerId}`,
      priceId: "price_1",
      periodStart: NOW - 10 * DAY_MS,
      periodEnd: NOW + 20 * DAY_MS,
      previous,
      refreshedAt: NOW,
    });
    const none: CustomerBilling = {
      customerId: D,
      state: "none",
      detail: "no subscription item on the meter",
      subscriptionId: null,
      itemId: null,
      priceId: null,
      periodStart: null,
      periodEnd: null,
      previous: null,
      refreshedAt: NOW,
    };
    const prev = {
      start: NOW - 40 * DAY_MS,
      end: NOW - 10 * DAY_MS,
      invoiceId: "in_1",
      status: "draft",
      finalizesAt: NOW + HOUR_MS,
      finalizedAt: null,
    };
    const first = [ok(A, prev), ok(B, null), none, ok(C, { ...prev, invoiceId: null })];
    await lite.billing.store(first);
    await pgb.store(first);
    await expectSameTables(db, pool);
    const a = await lite.billing.load();
    const b = await pgb.load();
    expect(b).toEqual(a);
    expect(b.get(B)?.previous).toBeNull();
    expect(b.get(A)?.previous).toEqual(prev);

    // replaced: a customer given twice keeps its last row; others stay as they were
    const second = [
      ok(B, prev),
      { ...none, refreshedAt: NOW + 1 },
      { ...ok(A, null), refreshedAt: NOW + 1 },
      { ...ok(B, null), refreshedAt: NOW + 2 },
    ];
    await lite.billing.store(second);
    await pgb.store(second);
    await pgb.store([]);
    await expectSameTables(db, pool);
    expect(await pgb.load()).toEqual(await lite.billing.load());

    const t = (customer: string, i: number) => ({
      target_type: "sim",
      target_id: `HS${i}`,
      customer_id: customer,
      effective_from: NOW - i,
      created_at: NOW,
    });
    expect(await pgBilledCustomers(pool)).toEqual(await lite.customers.billed());
    await seed(db, pool, "assignments", [t(C, 1), t(A, 2), t(C, 3), t(D, 4), t(B, 5), t(A, 6)]);
    const billed = await lite.customers.billed();
    expect(await pgBilledCustomers(pool)).toEqual(billed);
    expect(billed).toEqual([C, A, D, B]);
  });
});

// --- retention -------------------------------------------------------------------------------

const RETENTION = 40;
const CUTOFF = NOW - RETENTION * DAY_MS;

/** dedupe records, sessions (ended and open, old and recent) and their readings around the cutoff */
function retentionRows(): { seen: Row[]; sessions: Row[]; readings: Row[] } {
  const seen: Row[] = [];
  for (let i = 0; i < 23; i++) {
    // ties on event_ts across batches, some past the cutoff, some not
    const t = CUTOFF - (i % 9) * HOUR_MS + (i % 4 === 0 ? HOUR_MS * 3 : -1);
    seen.push({
      event_sid: `EZ${String(i).padStart(4, "0")}`,
      event_ts: t,
      kind: "k",
      received_at: t,
    });
  }
  const sessions: Row[] = [];
  const readings: Row[] = [];
  for (let i = 0; i < 12; i++) {
    const ended = i % 3 !== 2;
    const last = CUTOFF + (i % 4 === 3 ? DAY_MS : -((i * 7) % 5) * HOUR_MS - 1);
    const sid = `PI${String((i * 5) % 12).padStart(4, "0")}`;
    const count = [0, 1, 5, 2, 3, 7][i % 6] as number;
    sessions.push({
      session_sid: sid,
      sim_sid: "HS1",
      start_time: last - DAY_MS,
      end_time: ended ? last : null,
      total_bytes: 100,
      window_sum_bytes: 0,
      basis: "cumulative",
      // wrong on purpose for some: it only shapes the batches
      reading_count: i % 5 === 1 ? 0 : count,
      buckets: "{}",
      last_reading_at: last,
      updated_at: last,
    });
    for (let k = 0; k < count; k++)
      readings.push({
        session_sid: sid,
        t: last - k * 60_000,
        event_sid: `EZr${i}_${k}`,
        cumulative: 10 * k,
        window_bytes: null,
        window_start: null,
        ended: k === 0 && ended,
      });
  }
  return { seen, sessions, readings };
}

async function seedRetention(db: Sqlite, pool: pg.Pool, horizon?: number): Promise<void> {
  const r = retentionRows();
  await seed(db, pool, "seen_events", r.seen);
  await seed(db, pool, "sessions", r.sessions);
  await seed(db, pool, "readings", r.readings);
  if (horizon !== undefined) await seed(db, pool, "meta", [{ key: PRUNED_BEFORE, value: horizon }]);
}

const horizonOf = (db: Sqlite) =>
  (
    db.$client.prepare("select value from meta where key = ?").get(PRUNED_BEFORE) as
      | { value: number }
      | undefined
  )?.value;

/** pruneExpired as it was before batches: one IMMEDIATE transaction, the reference */
function singleTransactionPrune(db: Sqlite, retentionDays: number, now: number): PruneResult {
  const cutoff = now - retentionDays * DAY_MS;
  const c = db.$client;
  return db.transaction(
    () => {
      const newest = c
        .prepare(
          `select max(t) as t from (
             select max(event_ts) as t from seen_events where event_ts < @cutoff
             union all
             select max(last_reading_at) from sessions where last_reading_at < @cutoff and end_time is not null)`,
        )
        .get({ cutoff }) as { t: number | null };
      const seen = c.prepare("DELETE FROM seen_events WHERE event_ts < ?").run(cutoff).changes;
      const old =
        "SELECT session_sid FROM sessions WHERE last_reading_at < ? AND end_time IS NOT NULL";
      const readings = c
        .prepare(`DELETE FROM readings WHERE session_sid IN (${old})`)
        .run(cutoff).changes;
      const sessions = c
        .prepare("DELETE FROM sessions WHERE last_reading_at < ? AND end_time IS NOT NULL")
        .run(cutoff).changes;
      if (newest.t !== null)
        c.prepare(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        ).run(PRUNED_BEFORE, newest.t + 1);
      return { seenEvents: seen, sessions, readings, cutoff };
    },
    { behavior: "immediate" },
  );
}

describe("retention in batches", () => {
  /** the totals and the final tables of one big batch, on SQLite */
  function reference(horizon?: number): { result: PruneResult; db: Sqlite } {
    const db = openDb(":memory:");
    cleanup.push(async () => {
      db.$client.close();
    });
    const r = retentionRows();
    const ins = (table: string, rows: Row[]) => {
      for (const row of rows) {
        const cols = Object.keys(row);
        db.$client
          .prepare(
            `insert into ${table} (${cols.join(", ")}) values (${cols.map(() => "?").join(", ")})`,
          )
          .run(...cols.map((c) => (typeof row[c] === "boolean" ? Number(row[c]) : row[c])));
      }
    };
    ins("seen_events", r.seen);
    ins("sessions", r.sessions);
    ins("readings", r.readings);
    if (horizon !== undefined) ins("meta", [{ key: PRUNED_BEFORE, value: horizon }]);
    return { result: singleTransactionPrune(db, RETENTION, NOW), db };
  }

  for (const horizon of [undefined, CUTOFF - 30 * DAY_MS, CUTOFF + DAY_MS]) {
    it(`batches of 2 give one big batch's totals, tables and pruned_before on both backends (stored horizon ${horizon === undefined ? "none" : new Date(horizon).toISOString()})`, async () => {
      const ref = reference(horizon);
      expect(ref.result.seenEvents).toBeGreaterThan(4);
      expect(ref.result.sessions).toBeGreaterThan(2);
      expect(ref.result.readings).toBeGreaterThan(4);

      const db = openDb(":memory:");
      cleanup.push(async () => {
        db.$client.close();
      });
      const { pool } = await testPgPool(cleanup);
      await seedRetention(db, pool, horizon);
      const lite = pruneExpired(db, RETENTION, NOW, 2);
      const onPg = await prunePg(pool, RETENTION, NOW, 2);
      expect(lite).toEqual(ref.result);
      expect(onPg).toEqual(ref.result);
      await expectSameTables(db, pool);
      expect(horizonOf(db)).toBe(horizonOf(ref.db));
      const d = await dumpBoth(ref.db, pool);
      expect(d.pg).toEqual(d.lite);

      // nothing left to prune: nothing changes
      expect(pruneExpired(db, RETENTION, NOW, 2)).toMatchObject({ seenEvents: 0, sessions: 0 });
      expect(await prunePg(pool, RETENTION, NOW, 2)).toMatchObject({ seenEvents: 0, readings: 0 });
      await expectSameTables(db, pool);
    });
  }

  it("the horizon is the newest deleted record plus one, and absent when nothing was deleted", async () => {
    const db = openDb(":memory:");
    cleanup.push(async () => {
      db.$client.close();
    });
    const { pool } = await testPgPool(cleanup);
    await seedRetention(db, pool);
    // 60 days: nothing is past the cutoff
    expect(pruneExpired(db, 60, NOW, 2)).toMatchObject({ seenEvents: 0, sessions: 0, readings: 0 });
    expect(await prunePg(pool, 60, NOW, 2)).toMatchObject({ seenEvents: 0, sessions: 0 });
    expect(horizonOf(db)).toBeUndefined();
    await expectSameTables(db, pool);
    // the port's three-argument call
    const r = await sqliteLedger(db).retention.prune(RETENTION, NOW);
    await prunePg(pool, RETENTION, NOW);
    await expectSameTables(db, pool);
    const rows = retentionRows();
    const newest = Math.max(
      ...rows.seen.map((s) => s.event_ts as number).filter((t) => t < CUTOFF),
      ...rows.sessions
        .filter((s) => s.end_time !== null && (s.last_reading_at as number) < CUTOFF)
        .map((s) => s.last_reading_at as number),
    );
    expect(horizonOf(db)).toBe(newest + 1);
    expect(r?.cutoff).toBe(CUTOFF);
    // no orphan: every reading left has its session
    const orphans = await pool.query<{ n: number }>(
      "select count(*) as n from readings r where not exists (select 1 from sessions s where s.session_sid = r.session_sid)",
    );
    expect(orphans.rows[0]?.n).toBe(0);
  });

  it("two concurrent prunePg: one skips (null) or both finish, and the totals add up", async () => {
    const ref = reference();
    for (let round = 0; round < 3; round++) {
      const db = openDb(":memory:");
      cleanup.push(async () => {
        db.$client.close();
      });
      const { pool, url } = await testPgPool(cleanup);
      await seedRetention(db, pool);
      const other = createPool(url, { role: "test-other", max: 2 });
      cleanup.push(() => other.end());
      const results = await Promise.all([
        prunePg(pool, RETENTION, NOW, 2),
        prunePg(other, RETENTION, NOW, 2),
      ]);
      const done = results.filter((r): r is PruneResult => r !== null);
      expect(done.length).toBeGreaterThan(0);
      const sum = done.reduce(
        (a, r) => ({
          seenEvents: a.seenEvents + r.seenEvents,
          sessions: a.sessions + r.sessions,
          readings: a.readings + r.readings,
          cutoff: r.cutoff,
        }),
        { seenEvents: 0, sessions: 0, readings: 0, cutoff: 0 },
      );
      expect(sum).toEqual(ref.result);
      const d = await dumpBoth(ref.db, pool);
      expect(d.pg).toEqual(d.lite);
      // the lock was released: a later pass runs (and finds nothing)
      expect(await prunePg(other, RETENTION, NOW, 2)).toMatchObject({ seenEvents: 0 });
      const held = await pool.query<{ n: number }>(
        `select count(*) as n from pg_locks
          where locktype = 'advisory' and classid = ${0x534d4c47} and objid = 2 and objsubid = 2`,
      );
      expect(held.rows[0]?.n).toBe(0);
    }
  });

  it("prunePg returns null while another session holds the prune lock, and runs once it is free", async () => {
    const db = openDb(":memory:");
    cleanup.push(async () => {
      db.$client.close();
    });
    const { pool } = await testPgPool(cleanup);
    await seedRetention(db, pool);
    const holder = await pool.connect();
    try {
      await holder.query(`select pg_advisory_lock(${0x534d4c47}, 2)`);
      expect(await prunePg(pool, RETENTION, NOW, 2)).toBeNull();
      const untouched = await pool.query<{ n: number }>("select count(*) as n from seen_events");
      expect(untouched.rows[0]?.n).toBe(23);
      await holder.query(`select pg_advisory_unlock(${0x534d4c47}, 2)`);
    } finally {
      holder.release();
    }
    expect(await prunePg(pool, RETENTION, NOW, 2)).toEqual(pruneExpired(db, RETENTION, NOW, 3));
    await expectSameTables(db, pool);
  });
});
