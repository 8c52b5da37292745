import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { openTestLedger } from "../helpers/ledger.ts";
import { tempDir } from "../helpers/process.ts";

// `simmeter replay` as a real child process (with its own in-process worker), the private Redis and
// the vitest project's ledger (a SQLite file or a PostgreSQL database): it exits 1 when nothing of the file was counted, and with --strict when any
// event was quarantined. Events counted before (duplicates) are not a failure.

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");
const ROOT = resolve(import.meta.dirname, "../..");

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The captured ended event (1536 bytes), optionally as another event of another session. */
function ended(n = 0): Record<string, unknown> {
  const text = readFileSync(
    join(ROOT, "test/fixtures/constructed-data-session-ended.json"),
    "utf8",
  );
  const e = JSON.parse(
    n === 0
      ? text
      : text
          .replaceAll("EZe7d61405c00f984884d2006f117ad10b", `EZ${n.toString(16).padStart(32, "0")}`)
          .replaceAll(
            "PIc64fc7780f12ab694aad316d7b06f7a3",
            `PI${n.toString(16).padStart(32, "0")}`,
          ),
  )[0] as Record<string, unknown>;
  return e;
}

/** An authenticated but unusable event: its data_total is negative. */
function broken(n: number): Record<string, unknown> {
  const e = ended(n);
  (e.data as Record<string, unknown>).data_total = -5;
  return e;
}

async function workspace() {
  const dir = tempDir("simmeter-replay-cli-");
  dirs.push(dir);
  const t = await openTestLedger({ file: true });
  const env = {
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: `rp${randomUUID().slice(0, 8)}`,
    ...t.env,
    RETENTION_DAYS: "100000", // the fixture is from 2022
    LOG_LEVEL: "warn",
  };
  const file = (name: string, events: unknown[]) => {
    const path = join(dir, name);
    writeFileSync(path, events.map((e) => `${JSON.stringify(e)}\n`).join(""));
    return path;
  };
  const replay = (args: string[]) =>
    new Promise<{ code: number | null; summary: Record<string, number>; stderr: string }>(
      (done, fail) => {
        const child = spawn(process.execPath, [BIN, "replay", ...args], {
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
        child.once("close", (code) =>
          done({ code, summary: JSON.parse(stdout.trim().split("\n").pop() || "{}"), stderr }),
        );
      },
    );
  const quarantined = async () =>
    (await t.sql<{ n: number }>("select count(*) as n from quarantine"))[0]?.n;
  return { dir, env, file, replay, quarantined };
}

describe("simmeter replay exit status", { timeout: 120_000 }, () => {
  it("exits 1 when every event of the file was quarantined, saying nothing was counted", async () => {
    const w = await workspace();
    const path = w.file("broken.jsonl", [broken(1), broken(2)]);
    const r = await w.replay([path]);
    expect(r.code).toBe(1);
    expect(r.summary).toMatchObject({ events: 2, counted: 0, duplicates: 0, quarantined: 2 });
    expect(r.stderr).toContain(
      `nothing counted: all 2 event(s) of ${path} that could be billed were quarantined (see simmeter quarantine)`,
    );
    expect(await w.quarantined()).toBe(2);
  });

  it("exits 1 for a file with no events", async () => {
    const w = await workspace();
    const path = w.file("empty.jsonl", []);
    const r = await w.replay([path]);
    expect(r.code).toBe(1);
    expect(r.summary).toMatchObject({ events: 0, counted: 0 });
    expect(r.stderr).toContain(`nothing counted: ${path} holds no events`);
  });

  it("exits 0 when a second replay of the same file finds every event already counted", async () => {
    const w = await workspace();
    const path = w.file("good.jsonl", [ended(1), ended(2)]);
    const first = await w.replay([path]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.summary).toMatchObject({ events: 2, counted: 2, duplicates: 0 });
    const again = await w.replay([path]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.summary).toMatchObject({ events: 2, counted: 0, duplicates: 2, quarantined: 0 });
    expect(again.stderr).not.toContain("nothing counted");
  });

  it("with some events quarantined exits 0 and says so; --strict exits 1", async () => {
    const w = await workspace();
    const path = w.file("mixed.jsonl", [ended(1), broken(2)]);
    const lax = await w.replay([path]);
    expect(lax.code, lax.stderr).toBe(0);
    expect(lax.summary).toMatchObject({ events: 2, counted: 1, quarantined: 1 });
    expect(lax.stderr).toContain("1 event(s) were quarantined: see simmeter quarantine");

    const other = w.file("mixed2.jsonl", [ended(3), broken(4)]);
    const strict = await w.replay([other, "--strict"]);
    expect(strict.code).toBe(1);
    expect(strict.summary).toMatchObject({ events: 2, counted: 1, quarantined: 1 });
    expect(strict.stderr).toContain(
      "--strict: 1 event(s) were quarantined (see simmeter quarantine)",
    );
    // --strict with nothing quarantined: 0.
    const clean = await w.replay([w.file("clean.jsonl", [ended(5)]), "--strict"]);
    expect(clean.code, clean.stderr).toBe(0);
  });
});
