// The PostgreSQL ledger (DATABASE_URL): reachable, recent enough, migrated, writable, durable, and
// with room for simmeter's pools (docs/design/postgres-ledger.md §7.3). Reads only: the database
// is never created and never migrated here.
import type pg from "pg";
import type { Config } from "../../config.ts";
import { createPool, describeUrl, pgMigrationStatus, scrub } from "../../db/pg/client.ts";
import { redactUrl } from "../../lib/redact-url.ts";
import type { Add } from "./check.ts";

/** the oldest server simmeter supports (server_version_num) */
const MIN_SERVER_VERSION_NUM = 130_000;
/** share of max_connections simmeter's connections may hold before the check warns */
const CONNECTIONS_WARN_SHARE = 0.8;

/** The settings the PostgreSQL checks read. */
export type PostgresCheckConfig = Pick<
  Config,
  | "DATABASE_URL"
  | "PG_POOL_MAX"
  | "PG_STATEMENT_TIMEOUT_MS"
  | "PG_LOCK_TIMEOUT_MS"
  | "PG_IDLE_IN_TRANSACTION_TIMEOUT_MS"
  | "PG_CONNECT_TIMEOUT_MS"
>;

/**
 * Every PostgreSQL check, each reporting for itself. Without a connection only "database" (its
 * failure) is added: the others need the server.
 */
export async function doctorPostgres(config: PostgresCheckConfig, add: Add): Promise<void> {
  const url = config.DATABASE_URL;
  if (!url) return;
  const where = describeUrl(url);
  const shownUrl = redactUrl(url);
  const pool = createPool(url, {
    role: "doctor",
    max: 2,
    statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: config.PG_LOCK_TIMEOUT_MS,
    idleInTransactionTimeoutMs: config.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    connectTimeoutMs: config.PG_CONNECT_TIMEOUT_MS,
  });
  try {
    const started = performance.now();
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      add("database", "fail", connectFailure(err, url, config.PG_CONNECT_TIMEOUT_MS), {
        dialect: "postgres",
        url: shownUrl,
      });
      return;
    }
    try {
      const connectMs = Math.round(performance.now() - started);
      add("database", "ok", `PostgreSQL at ${where} (connected in ${connectMs} ms)`, {
        dialect: "postgres",
        url: shownUrl,
        connect_ms: connectMs,
      });
      const check = async (name: string, run: () => Promise<void>) => {
        try {
          await run();
        } catch (err) {
          add(name, "fail", `could not read it: ${scrub(errorText(err), url)}`);
        }
      };
      await check("postgres version", () => versionCheck(client, add));
      await check("postgres migrations", () => migrationsCheck(client, where, add));
      await check("postgres read-only", () => readOnlyCheck(client, url, add));
      await check("postgres synchronous_commit", () => synchronousCommitCheck(client, url, add));
      await check("postgres timeouts", () => timeoutsCheck(client, config, add));
      await check("postgres connections", () => connectionsCheck(client, config, add));
    } finally {
      client.release();
    }
  } finally {
    await pool.end().catch(() => {});
  }
}

// --- the checks ----------------------------------------------------------------------------------

async function versionCheck(c: pg.PoolClient, add: Add): Promise<void> {
  const r = await c.query<{ num: number; version: string }>(
    `select current_setting('server_version_num')::int as num,
            current_setting('server_version') as version`,
  );
  const { num, version } = r.rows[0] as { num: number; version: string };
  const extra = { server_version: version, server_version_num: num };
  if (num < MIN_SERVER_VERSION_NUM)
    add(
      "postgres version",
      "fail",
      `PostgreSQL ${version}: simmeter needs PostgreSQL 13 or later; upgrade the server`,
      extra,
    );
  else add("postgres version", "ok", `PostgreSQL ${version}`, extra);
}

/** As doctorDatabase's SQLite messages; a pending migration fails (doctor never migrates). */
async function migrationsCheck(c: pg.PoolClient, where: string, add: Add): Promise<void> {
  const m = await pgMigrationStatus(c as unknown as pg.Client);
  const extra = {
    migrations_applied: m.applied,
    migrations_expected: m.expected,
    migrations_pending: m.pending,
  };
  if (m.pending.length > 0)
    add(
      "postgres migrations",
      "fail",
      `${where} lacks migration(s) ${m.pending.join(", ")} (${m.applied} of ${m.expected} applied): start simmeter work once to apply them`,
      extra,
    );
  else if (m.unknown > 0)
    add(
      "postgres migrations",
      "warn",
      `${where}: migrated by a newer simmeter (${m.unknown} migration(s) this version does not know): upgrade this one`,
      extra,
    );
  else if (m.changed.length > 0)
    add(
      "postgres migrations",
      "warn",
      `${where}: migration file(s) ${m.changed.join(", ")} changed after they were applied`,
      extra,
    );
  else
    add("postgres migrations", "ok", `${where} (${m.applied} of ${m.expected} migrations)`, extra);
}

/** A standby, or a database or role whose transactions are read-only: the worker cannot write. */
async function readOnlyCheck(c: pg.PoolClient, url: string, add: Add): Promise<void> {
  const r = await c.query<{
    recovery: boolean;
    default_ro: string;
    ro: string;
    source: string;
  }>(
    `select pg_is_in_recovery() as recovery,
            current_setting('default_transaction_read_only') as default_ro,
            current_setting('transaction_read_only') as ro,
            (select source from pg_settings where name = 'default_transaction_read_only') as source`,
  );
  const s = r.rows[0] as { recovery: boolean; default_ro: string; ro: string; source: string };
  const extra = {
    in_recovery: s.recovery,
    default_transaction_read_only: s.default_ro === "on",
    transaction_read_only: s.ro === "on",
  };
  if (s.recovery)
    add(
      "postgres read-only",
      "fail",
      "this is a read replica (pg_is_in_recovery() is true, every transaction is read-only): point DATABASE_URL at the primary",
      extra,
    );
  else if (s.default_ro === "on")
    add(
      "postgres read-only",
      "fail",
      `default_transaction_read_only is on (${sourceOf(s.source)}): every transaction simmeter opens is read-only, so the worker cannot write usage or the outbox; ${fixSetting("default_transaction_read_only", "off", s.source, url)}, or point DATABASE_URL at a writable database`,
      extra,
    );
  else if (s.ro === "on")
    add(
      "postgres read-only",
      "fail",
      "transaction_read_only is on: the worker cannot write usage or the outbox; point DATABASE_URL at the primary",
      extra,
    );
  else add("postgres read-only", "ok", "read-write primary", extra);
}

/**
 * synchronous_commit off acknowledges a commit before its WAL is flushed (ADR 0002's rule: an
 * outbox row is on disk before the Stripe call it precedes). Reporting statements set it on for
 * their own transactions; everything else commits at this setting.
 */
async function synchronousCommitCheck(c: pg.PoolClient, url: string, add: Add): Promise<void> {
  const r = await c.query<{ value: string; source: string }>(
    `select current_setting('synchronous_commit') as value,
            (select source from pg_settings where name = 'synchronous_commit') as source`,
  );
  const s = r.rows[0] as { value: string; source: string };
  const extra = { synchronous_commit: s.value, source: s.source };
  if (s.value === "off")
    add(
      "postgres synchronous_commit",
      "warn",
      `synchronous_commit is off (${sourceOf(s.source)}): PostgreSQL confirms a commit before its WAL is on disk, so a server crash can lose commits it confirmed. Reporting transactions set it on for themselves (the outbox rule of docs/adr/0002-sqlite-durability.md: a row is on disk before the Stripe call it precedes), but a commit made at this setting, ingested usage or an outbox intent no reporting transaction has flushed yet, can still be lost; ${fixSetting("synchronous_commit", "on", s.source, url)}; after a crash while it was off, replay that time's deliveries (simmeter replay)`,
      extra,
    );
  else add("postgres synchronous_commit", "ok", `synchronous_commit ${s.value}`, extra);
}

/** The effective timeouts of the pool's sessions (what PG_*_MS asked for, unless a pooler drops it). */
async function timeoutsCheck(
  c: pg.PoolClient,
  config: PostgresCheckConfig,
  add: Add,
): Promise<void> {
  const r = await c.query<{ name: string; setting: string }>(
    `select name, setting from pg_settings
      where name in ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout')`,
  );
  const ms = (name: string) =>
    Number(r.rows.find((row) => row.name === name)?.setting ?? Number.NaN);
  const settings = [
    ["statement_timeout", "PG_STATEMENT_TIMEOUT_MS", config.PG_STATEMENT_TIMEOUT_MS],
    ["lock_timeout", "PG_LOCK_TIMEOUT_MS", config.PG_LOCK_TIMEOUT_MS],
    [
      "idle_in_transaction_session_timeout",
      "PG_IDLE_IN_TRANSACTION_TIMEOUT_MS",
      config.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    ],
  ] as const;
  const effective = settings.map(([name, env, wanted]) => ({ name, env, wanted, ms: ms(name) }));
  // 0 is not sent (node-postgres omits it): the server's own setting applies then.
  const differ = effective.filter((e) => e.wanted !== 0 && e.ms !== e.wanted);
  const extra = Object.fromEntries(effective.map((e) => [`${e.name}_ms`, e.ms]));
  const shown = effective.map((e) => `${e.name} ${e.ms === 0 ? "off" : `${e.ms} ms`}`).join(", ");
  if (differ.length > 0)
    add(
      "postgres timeouts",
      "warn",
      `${shown} in the pool's sessions, not ${differ.map((e) => `${e.env}=${e.wanted}`).join(", ")}: a connection pooler between simmeter and PostgreSQL may drop the startup parameters that set them`,
      extra,
    );
  else add("postgres timeouts", "ok", `${shown} in the pool's sessions`, extra);
}

/** simmeter's connections (application_name simmeter-<role>) against max_connections. */
async function connectionsCheck(
  c: pg.PoolClient,
  config: PostgresCheckConfig,
  add: Add,
): Promise<void> {
  const r = await c.query<{ max: number; simmeter: number; total: number }>(
    `select current_setting('max_connections')::int as max,
            (select count(*) from pg_stat_activity where application_name like 'simmeter%')::int as simmeter,
            (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as total`,
  );
  const s = r.rows[0] as { max: number; simmeter: number; total: number };
  const pct = Math.round((100 * s.simmeter) / s.max);
  const poolMax =
    config.PG_POOL_MAX === undefined
      ? "PG_POOL_MAX (unset: 8 per simmeter work or start, 4 per other process)"
      : `PG_POOL_MAX (${config.PG_POOL_MAX})`;
  const extra = {
    simmeter_connections: s.simmeter,
    client_connections: s.total,
    max_connections: s.max,
    pool_max: config.PG_POOL_MAX ?? null,
  };
  const counted = `${s.simmeter} of max_connections ${s.max} (${pct} %) are simmeter's (application_name simmeter-*, this check's own included; ${s.total} client connections in all)`;
  if (s.simmeter > CONNECTIONS_WARN_SHARE * s.max)
    add(
      "postgres connections",
      "warn",
      `${counted}: above ${CONNECTIONS_WARN_SHARE * 100} %, so a new process or a growing pool may be refused; lower ${poolMax}, run fewer processes or raise max_connections: PG_POOL_MAX × processes must stay below max_connections`,
      extra,
    );
  else
    add(
      "postgres connections",
      "ok",
      `${counted}; keep ${poolMax} × processes below max_connections`,
      extra,
    );
}

// --- messages ------------------------------------------------------------------------------------

/** Why the connection failed, naming host:port/database, never the password. */
function connectFailure(err: unknown, url: string, timeoutMs: number): string {
  const where = describeUrl(url);
  const e = err as Error & { code?: string };
  if (e.code === "3D000") {
    const t = target(url);
    return scrub(
      `PostgreSQL at ${where}: ${e.message}: create it (${createdb(t)}) or fix DATABASE_URL`,
      url,
    );
  }
  const text = errorText(err);
  const timedOut = /timeout/i.test(text) ? ` (PG_CONNECT_TIMEOUT_MS=${timeoutMs})` : "";
  return scrub(`cannot connect to PostgreSQL at ${where}: ${text}${timedOut}`, url);
}

function errorText(err: unknown): string {
  const e = err as Error & { code?: string };
  const message = e?.message || String(err);
  return e?.code && !message.includes(e.code) ? `${e.code} ${message}` : message;
}

type Target = { host?: string; port?: string; user?: string; database?: string };

function target(url: string): Target {
  try {
    const u = new URL(url);
    const host = u.hostname || u.searchParams.get("host") || undefined;
    return {
      ...(host ? { host: decodeURIComponent(host) } : {}),
      ...(u.port ? { port: u.port } : {}),
      ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
      ...(u.pathname.length > 1 ? { database: decodeURIComponent(u.pathname.slice(1)) } : {}),
    };
  } catch {
    return {};
  }
}

/** the createdb command line for the URL's server, user and database */
function createdb(t: Target): string {
  const q = (s: string) => (/^[\w./:@-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`);
  return [
    "createdb",
    ...(t.host ? ["-h", q(t.host)] : []),
    ...(t.port ? ["-p", t.port] : []),
    ...(t.user ? ["-U", q(t.user)] : []),
    q(t.database ?? "simmeter"),
  ].join(" ");
}

/** pg_settings.source in words */
function sourceOf(source: string): string {
  switch (source) {
    case "database":
      return "set for this database";
    case "user":
      return "set for this role";
    case "database user":
      return "set for this role in this database";
    case "command line":
      return "set on the server's command line";
    case "configuration file":
      return "set in the server's configuration";
    case "default":
      return "the server's default";
    case "client":
      return "set by the connection's options";
    default:
      return `source: ${source}`;
  }
}

/** how to set `name` to `value` where it is set now (pg_settings.source) */
function fixSetting(name: string, value: string, source: string, url: string): string {
  const t = target(url);
  const db = `"${(t.database ?? "your_database").replaceAll('"', '""')}"`;
  const role = `"${(t.user ?? "your_role").replaceAll('"', '""')}"`;
  switch (source) {
    case "database":
      return `run ALTER DATABASE ${db} SET ${name} = ${value} (new sessions get it)`;
    case "user":
      return `run ALTER ROLE ${role} SET ${name} = ${value} (new sessions get it)`;
    case "database user":
      return `run ALTER ROLE ${role} IN DATABASE ${db} SET ${name} = ${value} (new sessions get it)`;
    case "command line":
      return `remove -c ${name}=… from the server's command line and restart it, or run ALTER DATABASE ${db} SET ${name} = ${value}`;
    case "client":
      return `remove ${name} from the options of DATABASE_URL (or PGOPTIONS)`;
    default:
      return `set ${name} = ${value} on the server (ALTER SYSTEM SET ${name} = ${value}; SELECT pg_reload_conf(), or the provider's parameter group)`;
  }
}
