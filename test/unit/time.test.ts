import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { parseUtcTime } from "../../src/lib/time.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const ms = (iso: string) => Date.parse(iso);

/** Accepted forms and the instant each one means (a time without an offset is UTC). */
const ACCEPTED: [string, number][] = [
  ["2026-11-20", ms("2026-11-20T00:00:00.000Z")],
  ["2024-02-29", ms("2024-02-29T00:00:00.000Z")],
  ["2026-11-20T10:30", ms("2026-11-20T10:30:00.000Z")],
  ["2026-11-20T10:30:15", ms("2026-11-20T10:30:15.000Z")],
  ["2026-11-20T10:30:15.250", ms("2026-11-20T10:30:15.250Z")],
  ["2026-11-20T10:30:00Z", ms("2026-11-20T10:30:00.000Z")],
  ["2026-11-20T10:30Z", ms("2026-11-20T10:30:00.000Z")],
  ["2026-11-20T10:30:00+05:30", ms("2026-11-20T05:00:00.000Z")],
  ["2026-11-20T10:30-05:00", ms("2026-11-20T15:30:00.000Z")],
  ["2026-11-20 10:30", ms("2026-11-20T10:30:00.000Z")],
  ["2026-11-20 10:30:00+01:00", ms("2026-11-20T09:30:00.000Z")],
  [" 2026-11-20T10:30 ", ms("2026-11-20T10:30:00.000Z")],
];

/** Every one of these is read as some time by Date.parse (some in the local zone): refused. */
const REFUSED = [
  "01/12/2026",
  "2026/11/20 10:00",
  "2026-02-30",
  "2026-02-30T10:00:00Z",
  "2025-02-29",
  "2026-04-31T00:00",
  "12",
  "0",
  "2026",
  "2026-11",
  "2026-11-20T24:00",
  "2026-11-20t10:30",
  "2026-11-20T10:30:00+0530",
  "Fri, 20 Nov 2026 10:00:00 GMT",
];

const outcome = (v: string): number | "refused" => {
  try {
    return parseUtcTime(v, "--from");
  } catch {
    return "refused";
  }
};

const expectedTable = Object.fromEntries([
  ...ACCEPTED,
  ...REFUSED.map((v) => [v, "refused"] as const),
]);

describe("parseUtcTime: every time given to a command or a CSV is ISO 8601, UTC without an offset", () => {
  it("reads each ISO 8601 form to its UTC instant and refuses every other form", () => {
    const got = Object.fromEntries(Object.keys(expectedTable).map((v) => [v, outcome(v)]));
    expect(got).toEqual(expectedTable);
  });

  it.each(REFUSED)(
    "refuses %j with a message naming the option, the value and an example",
    (value) => {
      expect(() => parseUtcTime(value, "--from")).toThrow(
        new RegExp(
          `^--from ${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is not an ISO 8601 time \\(e\\.g\\. 2026-11-01`,
        ),
      );
    },
  );

  it("gives the same epoch ms, and refuses the same values, under TZ=America/New_York and TZ=Asia/Kolkata as in UTC", () => {
    const script = `
      import { parseUtcTime } from ${JSON.stringify(resolve(ROOT, "src/lib/time.ts"))};
      const values = JSON.parse(process.argv[1]);
      const out = {};
      for (const v of values) {
        try { out[v] = parseUtcTime(v, "--from"); } catch { out[v] = "refused"; }
      }
      process.stdout.write(JSON.stringify(out));
    `;
    const values = JSON.stringify(Object.keys(expectedTable));
    for (const TZ of ["America/New_York", "Asia/Kolkata", "UTC"]) {
      const r = spawnSync(
        process.execPath,
        ["--import", "tsx", "--input-type=module", "--eval", script, values],
        { cwd: ROOT, env: { ...process.env, TZ }, encoding: "utf8", timeout: 30_000 },
      );
      expect(r.status, r.stderr).toBe(0);
      expect({ TZ, table: JSON.parse(r.stdout) }).toEqual({ TZ, table: expectedTable });
    }
  });
});
