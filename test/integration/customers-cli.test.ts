import { spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openTestLedger } from "../helpers/ledger.ts";
import { tempDir } from "../helpers/process.ts";

// `simmeter customers …` as a real child process against the vitest project's ledger (a SQLite
// file or a PostgreSQL database, its env given to every run); these commands need no Redis.

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");
const SIM = "HS0123456789abcdef0123456789abcdef";
const SIM2 = "HSfedcba9876543210fedcba9876543210";
const FLEET = "HF0123456789abcdef0123456789abcdef";
const HOUR = 3_600_000;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function workspace() {
  const dir = tempDir("simmeter-customers-cli-");
  dirs.push(dir);
  // customers commands refuse a missing database (the worker creates it): a migrated ledger.
  const t = await openTestLedger({ file: true });
  const env = { ...t.env, LOG_LEVEL: "warn" };
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const cli = (args: string[], extraEnv: Record<string, string | undefined> = {}) =>
    simmeter(args, { ...env, ...extraEnv });
  const list = async () => {
    const r = await cli(["customers", "list", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as {
      object: "list";
      has_more: boolean;
      data: {
        target_type: string;
        target_id: string;
        customer_id: string;
        effective_from: string;
      }[];
    };
    expect(list).toMatchObject({ object: "list", has_more: false, next_starting_after: null });
    return list.data.map((a) => ({
      type: a.target_type,
      id: a.target_id,
      customer: a.customer_id,
      from: a.effective_from,
    }));
  };
  return { dir, file, cli, list };
}

function simmeter(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.once("error", fail);
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

describe("simmeter customers (CLI)", () => {
  it("assign prints the mapping and the whole hour it takes effect from", async () => {
    const w = await workspace();
    const r = await w.cli([
      "customers",
      "assign",
      SIM,
      "--sim",
      "--customer",
      "cus_A1",
      "--from",
      "2026-11-20T10:30:00Z",
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`sim ${SIM} → cus_A1 from 2026-11-20T11:00:00.000Z\n`);
    expect(await w.list()).toEqual([
      { type: "sim", id: SIM, customer: "cus_A1", from: "2026-11-20T11:00:00.000Z" },
    ]);
  });

  it("assign without --from takes effect from the next whole hour", async () => {
    const w = await workspace();
    const before = Date.now();
    const r = await w.cli(["customers", "assign", FLEET, "--fleet", "--customer", "cus_A1"]);
    const after = Date.now();
    expect(r.code).toBe(0);
    const m = /^fleet (\S+) → (\S+) from (\S+)\n$/.exec(r.stdout);
    expect(m?.[1]).toBe(FLEET);
    expect(m?.[2]).toBe("cus_A1");
    const from = Date.parse(m?.[3] ?? "");
    expect(from % HOUR).toBe(0);
    expect(from).toBeGreaterThanOrEqual(Math.ceil(before / HOUR) * HOUR);
    expect(from).toBeLessThanOrEqual(Math.ceil(after / HOUR) * HOUR);
  });

  it("assign takes a --from time without an offset as UTC, as its help says, whatever the machine's zone", async () => {
    const w = await workspace();
    const r = await w.cli(
      [
        "customers",
        "assign",
        SIM,
        "--sim",
        "--customer",
        "cus_A1",
        "--from",
        "2026-11-20T10:30:00",
      ],
      { TZ: "America/New_York" },
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`sim ${SIM} → cus_A1 from 2026-11-20T11:00:00.000Z\n`);
  });

  it("assign with two kinds of target exits non-zero, says to give exactly one, and stores nothing", async () => {
    const w = await workspace();
    const r = await w.cli(["customers", "assign", SIM, "--sim", "--fleet", "--customer", "cus_A1"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("give exactly one of --sim, --iccid, --fleet");
    expect(await w.list()).toEqual([]);
  });

  it("assign with no kind of target exits non-zero and says to give exactly one", async () => {
    const w = await workspace();
    const r = await w.cli(["customers", "assign", SIM, "--customer", "cus_A1"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("give exactly one of --sim, --iccid, --fleet");
  });

  it("assign of a malformed SIM SID exits 1 with a message naming it", async () => {
    const w = await workspace();
    const r = await w.cli(["customers", "assign", "HS123", "--sim", "--customer", "cus_A1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('"HS123" is not a Super SIM SID');
    expect(await w.list()).toEqual([]);
  });

  it("import of a CSV with a bad row exits 1, prints file:LINE: message, and imports nothing", async () => {
    const w = await workspace();
    const csv = w.file(
      "bad.csv",
      `sim_sid,stripe_customer_id\n${SIM},cus_A1\nHSnope,cus_B2\n${SIM2},cus_C3\n`,
    );
    const r = await w.cli(["customers", "import", csv]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`${csv}:3: "HSnope" is not a Super SIM SID`);
    expect(r.stderr).toContain("nothing imported: 1 bad row(s)");
    expect(await w.list()).toEqual([]);
  });

  it("import of a CSV with a bad header exits 1 and reports line 1", async () => {
    const w = await workspace();
    const csv = w.file("header.csv", `sim,customer\n${SIM},cus_A1\n`);
    const r = await w.cli(["customers", "import", csv]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${csv}:1: header must hold exactly one of`);
    expect(await w.list()).toEqual([]);
  });

  it("a good import prints the count and list --json shows the rows", async () => {
    const w = await workspace();
    const csv = w.file(
      "good.csv",
      [
        "sim_sid,stripe_customer_id,effective_from",
        `${SIM2},cus_B2,2026-11-01T00:00:00Z`,
        `"${SIM}","cus_A1","2026-11-10T08:15:00Z"`,
        "",
      ].join("\r\n"),
    );
    const r = await w.cli(["customers", "import", csv]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "2 new, 0 unchanged; effective from 2026-11-01T00:00:00.000Z (the earliest of 2 effective times)\n",
    );
    // In the order they were made (the file's order).
    expect(await w.list()).toEqual([
      { type: "sim", id: SIM2, customer: "cus_B2", from: "2026-11-01T00:00:00.000Z" },
      { type: "sim", id: SIM, customer: "cus_A1", from: "2026-11-10T09:00:00.000Z" },
    ]);
  });

  it("list without --json prints a table of the assignments", async () => {
    const w = await workspace();
    const empty = await w.cli(["customers", "list"]);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toContain("no assignments");
    await w.cli([
      "customers",
      "assign",
      FLEET,
      "--fleet",
      "--customer",
      "cus_A1",
      "--from",
      "2026-11-01",
    ]);
    const r = await w.cli(["customers", "list"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toMatch(/^type\s+id\s+customer\s+from$/);
    expect(r.stdout).toMatch(
      new RegExp(`\\nfleet\\s+${FLEET}\\s+cus_A1\\s+2026-11-01T00:00:00\\.000Z\\n`),
    );
  });
});
