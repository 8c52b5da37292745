import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { Redis } from "ioredis";
import { afterAll, describe, expect, inject, it } from "vitest";

// `npm run demo` end to end, as a user runs it, against the shared test Redis (REDIS_URL): the demo
// then starts no redis-server of its own and works under a `demo-<UTC second>` key prefix, which no
// other test uses, and deletes that prefix's keys once it succeeded.

const ROOT = resolve(import.meta.dirname, "../..");
const TIMEOUT_MS = 120_000;

const leftovers: string[] = [];
afterAll(() => {
  // The demo keeps its database, customer CSV and service log in data/ for the user to inspect.
  for (const f of leftovers) rmSync(f, { force: true });
});

function runDemo(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    // Its own process group, so a timeout can stop npm, tsx and every child the demo started.
    const child = spawn("npm", ["run", "--silent", "demo", "--", ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    }, TIMEOUT_MS - 5_000);
    child.once("error", fail);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr });
    });
  });
}

describe("npm run demo", () => {
  it(
    "with REDIS_URL set, runs end to end on that Redis, prints a drift table whose every customer row and total show drift 0, says OK and exits 0",
    async () => {
      const redisUrl = inject("redisUrl");
      const r = await runDemo(["--sims", "12", "--customers", "3", "--hours", "2", "--seed", "7"], {
        REDIS_URL: redisUrl,
      });
      const db = /^database\s+(\S+)$/m.exec(r.stdout)?.[1];
      if (db) {
        const base = join(ROOT, db).replace(/\.db$/, "");
        for (const suffix of [".db", ".db-wal", ".db-shm", "-customers.csv", "-simmeter.log"])
          leftovers.push(`${base}${suffix}`);
      }
      const output = `exit ${r.code} ${r.signal ?? ""}\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
      expect(r.code, output).toBe(0);
      expect(r.stdout).toContain(`redis          ${redisUrl} (from REDIS_URL)`);
      expect(r.stdout).not.toContain("redis-server   ");

      const lines = r.stdout.split("\n");
      const head = lines.findIndex((l) => /^customer\s+SIMs\s+bytes counted/.test(l));
      expect(head, output).toBeGreaterThanOrEqual(0);
      const header = (lines[head] ?? "").trim().split(/\s{2,}/);
      expect(header).toEqual([
        "customer",
        "SIMs",
        "bytes counted",
        "bytes in Stripe",
        "drift",
        "on invoices",
        "difference",
        "ground truth",
      ]);
      const driftCol = header.indexOf("drift");
      const differenceCol = header.indexOf("difference");
      const body: string[][] = [];
      let total: string[] | undefined;
      for (const l of lines.slice(head + 2)) {
        if (/^-+(\s+-+)*$/.test(l.trim())) continue;
        const cells = l.trim().split(/\s{2,}/);
        if (cells[0] === "total") {
          total = cells;
          break;
        }
        body.push(cells);
      }
      expect(body, output).toHaveLength(3);
      for (const row of body) {
        expect(row[0], row.join(" | ")).toMatch(/^cus_[A-Za-z0-9]+$/);
        expect(row[driftCol], row.join(" | ")).toBe("0");
        expect(row[differenceCol], row.join(" | ")).toBe("0");
        expect(row.at(-1), row.join(" | ")).toBe("ok");
        // counted equals what Stripe holds, what the invoices show and the simulator's ground truth
        expect(row[3]).toBe(row[2]);
        expect(row[5]).toBe(row[2]);
        expect(row[7]).toBe(row[2]);
      }
      expect(total, output).toBeDefined();
      expect(total?.[1]).toBe("12");
      expect(total?.[driftCol]).toBe("0");
      expect(total?.[differenceCol]).toBe("0");
      const statement = /^statement\s+(\S+): (cus_\S+)'s current invoice, (\d+) SIM line/m.exec(
        r.stdout,
      );
      expect(statement, output).not.toBeNull();
      leftovers.push(join(ROOT, statement?.[1] ?? ""));
      expect(total?.at(-1)).toBe("ok");
      expect(r.stdout).toMatch(/^OK: every customer's usage is counted exactly once/m);
      expect(r.stdout).not.toContain("FAILED");

      // A successful run on a Redis it does not own removes its own keys and nobody else's.
      const prefix = `demo-${/demo-(\d{8}T\d{6}Z)\.db/.exec(db ?? "")?.[1]}`;
      const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
      try {
        const left: string[] = [];
        let cursor = "0";
        do {
          const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
          cursor = next;
          left.push(...keys);
        } while (cursor !== "0");
        expect(left).toEqual([]);
      } finally {
        redis.disconnect();
      }
    },
    TIMEOUT_MS,
  );
});
