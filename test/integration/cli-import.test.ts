import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { HOUR_MS } from "../../src/accounting/buckets.ts";
import { assignCustomer, importCustomersCsv } from "../../src/customers/customers.ts";
import { cli, tempDirsRemovedAfterAll } from "../helpers/cli.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { ingestFixtureVia } from "../helpers/seed.ts";

// `simmeter customers import` as a real child process against the vitest project's ledger (a
// SQLite file or a PostgreSQL database): every bad row in one pass, nothing imported when any row
// is bad, and a second import of the same file adds nothing ("0 new, 4 unchanged").

const SIM_A = "HS0123456789abcdef0123456789abcdef";
const SIM_B = "HSfedcba9876543210fedcba9876543210";
const SIM_C = "HSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SIM_D = "HSbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/** The SIM of the captured fixture event: 1536 bytes in 2022-12-14T13:00Z, ICCID below. */
const FIXTURE_SIM = "HS2f71995b834d803ff5376799ba59bd1d";
const FIXTURE_ICCID = "89883070000005381783";

const freshDir = tempDirsRemovedAfterAll("simmeter-import-");

async function workspace() {
  const dir = freshDir();
  const t = await openTestLedger({ file: true });
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const assignments = async () =>
    (await t.ledger.assignments.list()).map((a) => ({
      id: a.targetId,
      customer: a.customerId,
      from: new Date(a.effectiveFrom).toISOString(),
    }));
  return {
    dir,
    ledger: t.ledger,
    file,
    cli: (args: string[]) => cli(args, t.env),
    assignments,
  };
}

describe("simmeter customers import (CLI)", () => {
  it("reports every bad row in one pass, each with its line and reason, and imports nothing", async () => {
    const w = await workspace();
    const csv = w.file(
      "bad.csv",
      [
        "sim_sid,stripe_customer_id,effective_from",
        `${SIM_A},cus_A1,2026-11-01`, // 2: good
        `HSnope,cus_B2,2026-11-01`, // 3: bad SID
        `${SIM_B},cus_B2,2026-11-01,extra`, // 4: a field too many
        `${SIM_C},customer-3,2026-11-01`, // 5: bad customer
        `${SIM_D},cus_D4,next tuesday`, // 6: bad time
        `${SIM_A},cus_Z9,2026-11-01T00:00:00Z`, // 7: line 2's SIM and hour, another customer
        `${SIM_B}`, // 8: a field too few
        "",
      ].join("\n"),
    );
    const r = await w.cli(["customers", "import", csv]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const lines = r.stderr.split("\n").filter((l) => l.startsWith(`${csv}:`));
    expect(lines.map((l) => Number(l.slice(csv.length + 1).split(":")[0]))).toEqual([
      3, 4, 5, 6, 7, 8,
    ]);
    expect(r.stderr).toContain(`${csv}:3: "HSnope" is not a Super SIM SID`);
    expect(r.stderr).toContain(`${csv}:4: 4 field(s), the header has 3`);
    expect(r.stderr).toContain(`${csv}:5: "customer-3" is not a Stripe customer id`);
    expect(r.stderr).toContain(`${csv}:6: effective_from "next tuesday" is not an ISO 8601 time`);
    expect(r.stderr).toContain(
      `${csv}:7: ${SIM_A} is assigned from 2026-11-01T00:00:00.000Z to cus_A1 on line 2 and to cus_Z9 here`,
    );
    expect(r.stderr).toContain(`${csv}:8: 1 field(s), the header has 3`);
    expect(r.stderr).toContain("nothing imported: 6 bad row(s)");
    expect(await w.assignments()).toEqual([]);
  });

  it("a broken quote is reported with its line, beside the bad rows before it", async () => {
    const w = await workspace();
    const csv = w.file(
      "quote.csv",
      `sim_sid,stripe_customer_id\nHSnope,cus_A1\n${SIM_A},cus_B2\n"${SIM_B},cus_C3\n${SIM_C},cus_D4\n`,
    );
    const r = await w.cli(["customers", "import", csv]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${csv}:2: "HSnope" is not a Super SIM SID`);
    expect(r.stderr).toMatch(new RegExp(`${csv}:4: Quote Not Closed`));
    expect(await w.assignments()).toEqual([]);
  });

  it('importing the same file again adds nothing ("0 new, 4 unchanged"); changing one row adds only that row', async () => {
    const w = await workspace();
    const rows = [
      "sim_sid,stripe_customer_id,effective_from",
      `${SIM_A},cus_A1,2026-11-01T00:00:00Z`,
      `${SIM_B},cus_B2,2026-11-10T08:15:00Z`,
      `${SIM_C},cus_C3,`, // blank: from the next whole hour
      `${SIM_A},cus_A1,2026-11-01T00:00:00Z`, // the same row twice in one file
    ];
    const csv = w.file("customers.csv", `${rows.join("\n")}\n`);
    const before = Date.now();
    const first = await w.cli(["customers", "import", csv]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe(
      "3 new, 1 unchanged; effective from 2026-11-01T00:00:00.000Z (the earliest of 3 effective times)\n",
    );
    const imported = await w.assignments();
    expect(imported).toHaveLength(3);
    const nextHour = Date.parse(imported.find((a) => a.id === SIM_C)?.from ?? "");
    expect(nextHour % HOUR_MS).toBe(0);
    expect(nextHour).toBeGreaterThanOrEqual(Math.ceil(before / HOUR_MS) * HOUR_MS);

    const second = await w.cli(["customers", "import", csv]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe("0 new, 4 unchanged; nothing changed\n");
    expect(await w.assignments()).toEqual(imported);

    // SIM_B moves to another customer from the same time: one new assignment.
    const changed = w.file(
      "changed.csv",
      `${rows.slice(0, 2).join("\n")}\n${SIM_B},cus_Z9,2026-11-10T08:15:00Z\n${rows[3]}\n`,
    );
    const third = await w.cli(["customers", "import", changed]);
    expect(third.code, third.stderr).toBe(0);
    expect(third.stdout).toBe("1 new, 2 unchanged; effective from 2026-11-10T09:00:00.000Z\n");
    expect(await w.assignments()).toHaveLength(4);
  });

  it("--json prints a snake_case summary, and the bad rows with their lines when refused", async () => {
    const w = await workspace();
    const good = w.file(
      "good.csv",
      `fleet_sid,stripe_customer_id,effective_from\nHF0123456789abcdef0123456789abcdef,cus_A1,2026-11-01\n`,
    );
    const r = await w.cli(["customers", "import", good, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      ok: true,
      new: 1,
      unchanged: 0,
      effective_from: ["2026-11-01T00:00:00.000Z"],
      rebilled: [],
      errors: [],
    });
    const again = await w.cli(["customers", "import", good, "--json"]);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, new: 0, unchanged: 1 });

    const bad = w.file("bad.csv", `sim_sid,stripe_customer_id\nHSnope,cus_A1\n${SIM_A},nope\n`);
    const refused = await w.cli(["customers", "import", bad, "--json"]);
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stdout)).toEqual({
      ok: false,
      new: 0,
      unchanged: 0,
      effective_from: [],
      would_move: [],
      errors: [
        { line: 2, message: '"HSnope" is not a Super SIM SID (HS + 32 hex digits)' },
        { line: 3, message: '"nope" is not a Stripe customer id (cus_…)' },
      ],
    });
  });

  it("keeps the re-bill rule: a row that would move counted usage is refused, naming it, unless --rebill", async () => {
    const w = await workspace();
    await ingestFixtureVia(w.ledger, "f");
    await assignCustomer({
      ledger: w.ledger,
      now: Date.now(),
      input: {
        targetType: "sim",
        targetId: FIXTURE_SIM,
        customerId: "cus_old",
        effectiveFrom: Date.parse("2022-12-01T00:00:00Z"),
      },
    });
    const csv = w.file(
      "move.csv",
      `sim_sid,stripe_customer_id,effective_from\n${FIXTURE_SIM},cus_old,2022-12-01\n${FIXTURE_SIM},cus_new,2022-12-14T13:00:00Z\n`,
    );
    const moved = `${FIXTURE_SIM} cus_old → cus_new: 1536 bytes in 1 hour(s), 2022-12-14T13:00:00.000Z to 2022-12-14T13:00:00.000Z`;
    const refused = await w.cli(["customers", "import", csv]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("would move 1536 counted bytes in 1 SIM-hour(s)");
    expect(refused.stderr).toContain(moved);
    expect(refused.stderr).toContain("--rebill");
    expect((await w.assignments()).map((a) => a.customer)).toEqual(["cus_old"]);

    const rebilled = await w.cli(["customers", "import", csv, "--rebill"]);
    expect(rebilled.code, rebilled.stderr).toBe(0);
    expect(rebilled.stdout).toBe(
      `re-billed: ${moved}\n1 new, 1 unchanged; effective from 2022-12-14T13:00:00.000Z\n`,
    );
    expect((await w.assignments()).map((a) => a.customer)).toEqual(["cus_old", "cus_new"]);
  });
});

describe("importCustomersCsv: what counts as unchanged", () => {
  it("a SIM row that would override its ICCID's later assignment is new, not unchanged", async () => {
    const { ledger } = await openTestLedger();
    await ingestFixtureVia(ledger, "f");
    const now = Date.parse("2026-11-20T10:30:00Z");
    const csv = `sim_sid,stripe_customer_id\n${FIXTURE_SIM},cus_A1\n`;
    expect(await importCustomersCsv({ ledger, csv, now })).toMatchObject({
      imported: 1,
      unchanged: 0,
    });
    expect(await importCustomersCsv({ ledger, csv, now: now + HOUR_MS })).toMatchObject({
      imported: 0,
      unchanged: 1,
    });
    // The SIM's ICCID goes to another customer later on: importing the SIM row again now
    // would take the SIM back from that customer, so it is a change.
    await assignCustomer({
      ledger,
      now: now + 2 * HOUR_MS,
      input: { targetType: "iccid", targetId: FIXTURE_ICCID, customerId: "cus_B2" },
    });
    expect(await importCustomersCsv({ ledger, csv, now: now + 5 * HOUR_MS })).toMatchObject({
      imported: 1,
      unchanged: 0,
    });
    // An earlier effective time than the assignment in effect is a change too.
    const earlier = `sim_sid,stripe_customer_id,effective_from\n${FIXTURE_SIM},cus_A1,2026-11-01\n`;
    expect(await importCustomersCsv({ ledger, csv: earlier, now })).toMatchObject({
      imported: 1,
      unchanged: 0,
    });
  });
});
