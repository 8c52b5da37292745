import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { assignCustomer } from "../../src/customers/customers.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { runCli, waitFor } from "../helpers/process.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");
const SIM = `HS${"b".repeat(32)}`;

describe("the reporter process", () => {
  it("killed with SIGKILL between the Stripe call and the local commit, then restarted, reports nothing twice; reconcile sees zero drift, then a tamper", async () => {
    const emu = await startStripeEmulator({
      acceptAnyCustomer: true,
      autoSubscribe: true,
      faults: { delayAfterRecordRate: 1, delayMs: 3000, seed: 1 },
    });
    // the test's ledger (SQLite: a file) stays open beside the child processes; reads go through sql
    const t = await openTestLedger({ file: true });
    const now = Date.now();
    const hour = 3_600_000;
    const start = Math.floor(now / hour) * hour - 3 * hour;
    const events = [1, 2, 3].map((i) =>
      buildCloudEvent({
        eventSid: `EZ${i.toString(16).padStart(32, "c")}`,
        kind: i === 3 ? "data-session.ended" : "data-session.updated",
        accountSid: `AC${"1".repeat(32)}`,
        simSid: SIM,
        iccid: "89883070000005381783",
        timestampMs: start + i * hour - 60_000,
        sessionSid: `PI${"d".repeat(32)}`,
        sessionStartMs: start,
        windowStartMs: start,
        windowEndMs: start + i * hour - 60_000,
        cumulativeDown: i * 1000,
      }),
    );
    await t.ledger.ingestJob(
      { v: 1, deliveries: [{ id: "d", receivedAt: now, source: "replay", events }] },
      defaultSettings,
      () => now,
    );
    await assignCustomer({
      ledger: t.ledger,
      now,
      input: {
        targetType: "sim",
        targetId: SIM,
        customerId: "cus_crash",
        effectiveFrom: start - hour,
      },
    });
    await ensureMeter(
      createStripe({
        STRIPE_SECRET_KEY: emu.apiKey,
        STRIPE_API_BASE: emu.url,
        STRIPE_TIMEOUT_MS: 5000,
      }),
      EVENT_NAME,
    );
    const env = {
      ...process.env,
      ...t.env,
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `crash${Math.random().toString(36).slice(2, 7)}`,
      STRIPE_SECRET_KEY: emu.apiKey,
      STRIPE_API_BASE: emu.url,
      STRIPE_TIMEOUT_MS: "30000",
      LOG_LEVEL: "warn",
    };
    try {
      const child = spawn(process.execPath, [BIN, "report"], { env, stdio: "ignore" });
      // Stripe has recorded the first event; its answer is still on the way: kill now.
      await waitFor(() => emu.events().length === 1, "first meter event recorded", 30_000, 10);
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const states = async () =>
        (await t.sql<{ state: string }>("select state from meter_reports order by hour, seq")).map(
          (r) => r.state,
        );
      expect(await states()).toEqual(["pending", "pending", "pending"]);

      emu.setFaults({});
      await new Promise((r) => setTimeout(r, 3200)); // let the held answer finish, as Stripe would
      const again = await runCli(["report", "--json"], env);
      expect(again.status, again.stderr).toBe(0);
      const summary = JSON.parse(again.stdout);
      expect(summary).toMatchObject({ failed: 0, still_pending: 0 });
      // The killed call is answered from Stripe's idempotency store or refused as a duplicate
      // identifier; either way it counts as sent and is not recorded again.
      expect(summary.sent + summary.duplicates).toBe(3);
      expect(emu.events()).toHaveLength(3);
      expect(emu.totalsByCustomer(EVENT_NAME).get("cus_crash")).toBe(3000);
      expect(new Set(emu.events().map((e) => e.identifier)).size).toBe(3);
      expect(emu.stats().idempotentReplays + emu.stats().duplicateIdentifiers).toBe(1);
      // One row, one request: the retry of the killed call sent the same parameters.
      expect(emu.stats().idempotencyErrors).toBe(0);
      expect(await states()).toEqual(["sent", "sent", "sent"]);

      const reconcileOk = await runCli(["reconcile"], env);
      expect(reconcileOk.status, reconcileOk.stdout + reconcileOk.stderr).toBe(0);
      expect(reconcileOk.stdout).toMatch(/cus_crash/);
      emu.tamper({ customer: "cus_crash", value: 7, timestamp: Math.floor(start / 1000) });
      const reconcileBad = await runCli(["reconcile", "--json"], env);
      expect(reconcileBad.status).toBe(1);
      expect(JSON.parse(reconcileBad.stdout)[0]).toMatchObject({
        customer: "cus_crash",
        counted: 3000,
        reported: 3000,
        stripe: 3007,
        stripe_drift: -7,
      });
    } finally {
      await emu.close();
    }
  }, 120_000);
});
