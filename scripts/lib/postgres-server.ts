import { spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./redis-server.ts";

export const POSTGRES_INSTALL = "apt-get update && apt-get install -y postgresql";

export type PostgresHandle = {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust authentication: no password) */
  url: string;
  port: number;
  /** the data directory; also the directory of the Unix socket */
  dir: string;
  /** the bin directory the server runs from */
  bin: string;
  /** how long initdb + the first start took */
  startupMs: number;
  /** Stops the server and removes its data directory. */
  stop: () => Promise<void>;
  /** Stops the server (pg_ctl stop -m fast) but keeps its data, so start() brings it back. */
  halt: () => Promise<void>;
  start: () => Promise<void>;
};

export type PostgresOptions = {
  /**
   * test (the default): fsync, synchronous_commit and full_page_writes off. The tests never kill
   * the server, so nothing they check depends on what those settings protect.
   * production: PostgreSQL's durable defaults (fsync on), for benchmarks.
   */
  settings?: "test" | "production";
  maxConnections?: number;
};

/** The newest /usr/lib/postgresql/N/bin holding initdb, pg_ctl and postgres, or $PG_BIN. */
export function postgresBin(): string {
  const need = ["initdb", "pg_ctl", "postgres"];
  const complete = (dir: string) => need.every((b) => existsSync(join(dir, b)));
  const fromEnv = process.env.PG_BIN;
  if (fromEnv) {
    if (!complete(fromEnv))
      throw new Error(
        `PG_BIN=${fromEnv} lacks ${need.join(", ")}: point it at a PostgreSQL bin directory, or unset it and install PostgreSQL: ${POSTGRES_INSTALL}`,
      );
    return fromEnv;
  }
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+(\.\d+)?$/.test(v) && complete(join(root, v, "bin")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (!newest)
    throw new Error(
      `PostgreSQL server binaries not found (no ${root}/*/bin/initdb, PG_BIN unset). Install them: ${POSTGRES_INSTALL}`,
    );
  return join(root, newest, "bin");
}

/** uid and gid of the postgres user (initdb refuses to run as root) */
function postgresUser(): { uid: number; gid: number } {
  const ids = ["-u", "-g"].map((flag) => {
    const r = spawnSync("id", [flag, "postgres"], { encoding: "utf8" });
    return r.status === 0 ? Number(r.stdout.trim()) : Number.NaN;
  });
  const [uid, gid] = ids as [number, number];
  if (!Number.isInteger(uid) || !Number.isInteger(gid))
    throw new Error(
      `running as root, and there is no "postgres" user to run initdb and pg_ctl as (the Debian package creates it): ${POSTGRES_INSTALL}`,
    );
  return { uid, gid };
}

function serverOptions(port: number, dir: string, opts: PostgresOptions): string {
  const settings: Record<string, string | number> = {
    listen_addresses: "127.0.0.1",
    max_connections: opts.maxConnections ?? 300,
    ...(opts.settings === "production"
      ? {}
      : { fsync: "off", synchronous_commit: "off", full_page_writes: "off" }),
  };
  return [
    `-p ${port}`,
    `-k ${dir}`,
    ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`),
  ].join(" ");
}

/**
 * Starts a private PostgreSQL cluster: a fresh data directory under the temp dir, initdb
 * (trust authentication, superuser postgres), the server on a free port of 127.0.0.1 with its
 * socket in the data directory. As root the directory is chowned to postgres and initdb/pg_ctl
 * run through `runuser -u postgres --`. Missing binaries throw with the install command.
 */
export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresHandle> {
  const started = performance.now();
  const bin = postgresBin();
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? postgresUser() : undefined;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "simmeter-pg-"));
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const log = join(dir, "server.log");

  const run = (tool: string, args: string[]) => {
    const argv = asRoot ? ["-u", "postgres", "--", join(bin, tool), ...args] : args;
    const r = spawnSync(asRoot ? "runuser" : join(bin, tool), argv, {
      encoding: "utf8",
      // initdb and pg_ctl read no password; LC_ALL keeps initdb's locale checks quiet
      env: { ...process.env, LC_ALL: "C.UTF-8", PGPORT: String(port) },
    });
    if (r.error || r.status !== 0) {
      const tail = existsSync(log)
        ? readFileSync(log, "utf8").split("\n").slice(-20).join("\n")
        : "";
      throw new Error(
        `${tool} ${args.join(" ")} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}${r.stderr}${tail}`,
      );
    }
  };

  try {
    // -N: no fsync of the new cluster's files (the test server runs with fsync=off anyway)
    run("initdb", [
      "-D",
      dir,
      "-A",
      "trust",
      "-U",
      "postgres",
      "-E",
      "UTF8",
      "--locale=C.UTF-8",
      ...(opts.settings === "production" ? [] : ["-N"]),
    ]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  let running = false;
  const start = async () => {
    if (running) return;
    run("pg_ctl", [
      "-D",
      dir,
      "-l",
      log,
      "-w",
      "-t",
      "60",
      "-o",
      serverOptions(port, dir, opts),
      "start",
    ]);
    running = true;
  };
  const halt = async () => {
    if (!running) return;
    run("pg_ctl", ["-D", dir, "-w", "-t", "60", "-m", "fast", "stop"]);
    running = false;
  };
  // A crashed test runner must not leave a server behind.
  const onExit = () => {
    if (!running) return;
    const argv = ["-D", dir, "-m", "immediate", "stop"];
    if (asRoot) spawnSync("runuser", ["-u", "postgres", "--", join(bin, "pg_ctl"), ...argv]);
    else spawnSync(join(bin, "pg_ctl"), argv);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);

  try {
    await start();
  } catch (err) {
    process.removeListener("exit", onExit);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    bin,
    startupMs: Math.round(performance.now() - started),
    start,
    halt,
    stop: async () => {
      try {
        await halt();
      } finally {
        process.removeListener("exit", onExit);
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** `url` with its database replaced by `database` */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}
