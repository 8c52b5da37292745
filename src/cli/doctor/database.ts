// The ledger's checks: the database itself, and what it holds that nobody bills.
import { resolve } from "node:path";
import type { Config } from "../../config.ts";
import { type Db, migrationStatus, openDb } from "../../db/client.ts";
import { ENDED_ONLY_NEEDS_CUMULATIVE } from "../../ingest/ingest.ts";
import type { Ledger } from "../../ledger/port.ts";
import { iso } from "../../views/json.ts";
import type { Add } from "./check.ts";

/**
 * Present (never created) and migrated at least as far as this version expects. Returns the
 * database, opened read-only, for the checks that read it; null when it could not be opened.
 */
export function doctorDatabase(config: Config, add: Add): Db | null {
  const path = resolve(config.DATABASE_PATH);
  let db: Db;
  try {
    db = openDb(config.DATABASE_PATH, { mode: "read" });
  } catch (err) {
    add("database", "fail", (err as Error).message, { path });
    return null;
  }
  const m = migrationStatus(db.$client);
  const extra = {
    path,
    migrations_applied: m.applied,
    migrations_expected: m.expected,
  };
  if (m.unknown > 0)
    add(
      "database",
      "warn",
      `${path}: migrated by a newer simmeter (${m.unknown} migration(s) this version does not know): upgrade this one`,
      extra,
    );
  else if (m.changed.length > 0)
    add(
      "database",
      "warn",
      `${path}: migration file(s) ${m.changed.join(", ")} changed after they were applied`,
      extra,
    );
  else add("database", "ok", `${path} (${m.applied} of ${m.expected} migrations)`, extra);
  return db;
}

/** What the ledger holds that nobody bills: quarantined events, unmapped usage, stopped rows. */
export async function doctorLedger(config: Config, ledger: Ledger, add: Add): Promise<void> {
  if (config.BILLING_MODE === "ended-only") {
    const refused = await ledger.views.quarantinedFor(ENDED_ONLY_NEEDS_CUMULATIVE);
    add(
      "billing mode",
      refused ? "fail" : "ok",
      refused
        ? `ended-only: ${refused} data-session.ended event(s) without data_session_data_total refused (schema v1): their sessions are not billed; pin schema version 2 on the Event Streams subscription or use BILLING_MODE=realtime, then simmeter quarantine requeue --reason ended-only`
        : "ended-only: every ended event carried cumulative totals",
      { refused },
    );
  }
  const q = await ledger.views.quarantineBacklog();
  add(
    "quarantine",
    q.events > 0 ? "warn" : "ok",
    q.events > 0
      ? `${q.events} quarantined event(s) not counted since, the newest received ${iso(q.newest as number)}: run simmeter quarantine (then simmeter quarantine requeue once the cause is fixed)`
      : "no event waits in quarantine",
    {
      events: q.events,
      newest_received_at: iso(q.newest),
    },
  );
  const unmapped = await ledger.reads.unmapped();
  const bytes = unmapped.reduce((n, u) => n + u.bytes, 0);
  add(
    "unmapped usage",
    unmapped.length > 0 ? "warn" : "ok",
    unmapped.length > 0
      ? `${bytes} bytes of ${unmapped.length} SIM(s) no customer assignment covers, not billed: simmeter usage --unmapped`
      : "every SIM with usage is mapped to a customer",
    { bytes, sims: unmapped.length },
  );
  const failed = (await ledger.outbox.failed()).length;
  const pending = (await ledger.outbox.pending()).length;
  add(
    "outbox",
    failed ? "warn" : "ok",
    failed ? `${failed} stopped row(s): simmeter report --status` : `${pending} pending`,
    { stopped: failed, pending },
  );
}
