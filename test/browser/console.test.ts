// The operator console in a real headless Chromium against a real `simmeter start` whose ledger the
// simulator filled through the signed webhook and the reporter reported to the Stripe emulator
// (test/browser/rig.ts). Every figure a page shows is compared with the CLI's --json answer to the
// same question; the actions (requeue, retry, assign) are clicked through and their effect checked
// in the ledger and in Stripe; and without the token, or from another origin, nothing answers.
import { readFileSync } from "node:fs";
import { createServer, request as httpRequest, type Server } from "node:http";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createAdminApp } from "../../src/admin/app.ts";
import { mountConsole } from "../../src/console/mount.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import { runCli, tempDir } from "../helpers/process.ts";
import { type ConsoleRig, consoleRig, launchChromium, login, shoot } from "./rig.ts";

const HOUR_MS = 3_600_000;

// The CLI prints the views' documents (src/views/: lists as { object: "list", data, … }, keys in
// snake_case): the very documents the console renders. A list must be complete to be compared.
type Row = Record<string, unknown>;
const rowsOf = (j: unknown): Row[] => {
  expect(j).toMatchObject({ object: "list", has_more: false, next_starting_after: null });
  return (j as { data: Row[] }).data;
};
const pick = (r: Row, key: string): unknown => {
  expect(r, `a row with ${key}`).toHaveProperty(key);
  return r[key];
};
const num = (v: unknown) => Number(v ?? 0);
const sum = (rows: Row[], key: string) => rows.reduce((n, r) => n + num(pick(r, key)), 0);

async function value(page: Page, testid: string): Promise<number> {
  const v = await page.getAttribute(`[data-testid=${testid}]`, "data-value");
  if (v === null) throw new Error(`no data-value on [data-testid=${testid}]`);
  return Number(v);
}

/** A tiny site on another port: a page of "another origin" in the operator's browser. */
async function hostileSite(html: string): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(html);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

let rig: ConsoleRig;
let browser: Browser;
let context: BrowserContext;
let page: Page;

beforeAll(async () => {
  browser = await launchChromium();
  rig = await consoleRig({ redisUrl: inject("redisUrl") });
  context = await browser.newContext({
    viewport: { width: 1440, height: 900 },
    colorScheme: "light",
  });
  page = await context.newPage();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await rig?.stop();
});

describe("the console with ADMIN_TOKEN", { timeout: 90_000 }, () => {
  it("refuses every page and action without the token, and a wrong token at the login form", async () => {
    const pages = [
      "/console",
      "/console/customers",
      `/console/customers/${rig.mappedCustomer}`,
      `/console/customers/${rig.mappedCustomer}/statement.csv`,
      `/console/sims/${rig.mappedSim}`,
      "/console/billing",
      "/console/billing/retry",
      "/console/quarantine",
      "/console/quarantine/1",
      "/console/quarantine/requeue?id=1",
      "/console/anomalies",
      "/console/unmapped",
      `/console/assign?target_type=sim&target_id=${rig.unmappedSim}&customer=${rig.mappedCustomer}`,
      "/console/queues",
      "/console/queues/api/queues",
    ];
    const forged = "simmeter_session=v1.1.AAAAAAAAAAAAAAAAAAAAAAAA.forged";
    for (const p of pages) {
      for (const cookie of [undefined, forged]) {
        const html = await fetch(`${rig.adminUrl}${p}`, {
          redirect: "manual",
          headers: { accept: "text/html", ...(cookie ? { cookie } : {}) },
        });
        expect(html.status, `${p} (browser)`).toBe(303);
        expect(html.headers.get("location")).toMatch(/^\/console\/login\?next=/);
        const api = await fetch(`${rig.adminUrl}${p}`, { headers: cookie ? { cookie } : {} });
        expect(api.status, `${p} (script)`).toBe(401);
      }
    }
    const actions = [
      "/console/billing/retry",
      "/console/quarantine/requeue",
      "/console/assign",
      "/console/logout",
      "/console/queues/api/queues/ingest/retry/failed",
    ];
    for (const p of actions) {
      const r = await fetch(`${rig.adminUrl}${p}`, {
        method: p.includes("/queues/") ? "PUT" : "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: `target_type=sim&target_id=${rig.unmappedSim}&customer=cus_evil&id=1`,
      });
      expect(r.status, p).toBe(401);
    }
    // The login page and the static files answer; a wrong token does not sign in.
    expect((await fetch(`${rig.adminUrl}/console/login`)).status).toBe(200);
    expect((await fetch(`${rig.adminUrl}/console/assets/pico.min.css`)).status).toBe(200);
    await page.goto(`${rig.adminUrl}/console`);
    await page.waitForURL(/\/console\/login/);
    await page.fill("input[name=token]", "not-the-admin-token-at-all-0000");
    await page.click("[data-testid=login]");
    await expect
      .poll(() => page.textContent("[data-testid=login-error]"))
      .toContain("not the ADMIN_TOKEN");
    const cookies = await context.cookies();
    expect(cookies.find((c) => c.name === "simmeter_session")).toBeUndefined();
    const customers = rowsOf(await rig.cli(["customers", "list", "--json"]));
    expect(customers.some((c) => pick(c, "customer_id") === "cus_evil")).toBe(false);
  });

  it("signs in with the token (an HttpOnly, SameSite=Strict session cookie that is not the token) and shows the overview's figures as the CLI prints them", async () => {
    await login(page, rig.adminUrl, rig.token);
    const session = (await context.cookies()).find((c) => c.name === "simmeter_session");
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe("Strict");
    expect(session?.value).not.toContain(rig.token);

    await page.goto(`${rig.adminUrl}/console`);
    // The 72-hour chart's range, read from the page (an hour may turn meanwhile).
    const points = await page.$$eval("[data-testid=overview-usage-table] tr[data-period]", (trs) =>
      trs.map((tr) => ({
        period: tr.getAttribute("data-period") as string,
        bytes: Number(tr.getAttribute("data-value")),
      })),
    );
    expect(points.length).toBe(72);
    const from = (points[0] as { period: string }).period;
    const to = new Date(
      Date.parse((points.at(-1) as { period: string }).period) + HOUR_MS,
    ).toISOString();
    const [parityJson, unmappedJson, statusJson, quarantineJson, anomaliesJson, usageJson] =
      await Promise.all([
        rig.cli(["reconcile", "--period", "current", "--json"]),
        rig.cli(["usage", "--unmapped", "--json"]),
        rig.cli(["report", "--status", "--json"]),
        rig.cli(["quarantine", "list", "--limit", "1000", "--json"]),
        rig.cli(["anomalies", "--limit", "100000", "--json"]),
        rig.cli(["usage", "--by", "hour", "--from", from, "--to", to, "--json"]),
      ]);
    const parity = parityJson as Row[];
    expect(await value(page, "overview-counted")).toBe(sum(parity, "counted"));
    expect(await value(page, "overview-reported")).toBe(sum(parity, "reported"));
    expect(await value(page, "overview-invoiced")).toBe(sum(parity, "invoice_quantity"));
    expect(await value(page, "overview-unreported")).toBe(sum(parity, "unreported"));
    expect(sum(parity, "counted")).toBeGreaterThan(0);
    for (const r of parity) {
      const row = page.locator(`[data-testid=period-row][data-customer=${r.customer}]`);
      for (const k of ["counted", "reported", "invoice_quantity", "unreported"])
        expect(
          Number(await row.locator(`[data-field=${k}]`).getAttribute("data-value")),
          `${r.customer} ${k}`,
        ).toBe(r[k]);
    }
    const unmapped = rowsOf(unmappedJson);
    expect(await value(page, "overview-unmapped")).toBe(sum(unmapped, "bytes"));
    expect(await value(page, "overview-unmapped")).toBeGreaterThan(0);
    const status = statusJson as Row;
    const stopped = status.stopped as Row[];
    expect(await value(page, "overview-stopped-rows")).toBe(stopped.length);
    expect(stopped.length).toBeGreaterThan(0);
    expect(await value(page, "overview-stopped-bytes")).toBe(sum(stopped, "value"));
    expect(await value(page, "overview-held")).toBe(sum(status.held as Row[], "bytes"));
    const pending = num((status.pending as Row).rows);
    expect(await value(page, "overview-pending-rows")).toBe(pending);
    expect(await value(page, "overview-quarantine-rows")).toBe(rowsOf(quarantineJson).length);
    expect(await value(page, "overview-quarantine-open")).toBe(2);
    expect(await value(page, "overview-anomalies")).toBe(rowsOf(anomaliesJson).length);
    expect(await page.getAttribute("[data-testid=overview-last-report]", "data-value")).toMatch(
      /^\d{4}-/,
    );

    // The 72-hour chart's points are `usage --by hour` summed per hour over the same range.
    const usage = rowsOf(usageJson);
    const byHour = new Map<string, number>();
    for (const u of usage)
      byHour.set(String(u.period), (byHour.get(String(u.period)) ?? 0) + num(u.bytes));
    for (const p of points) expect(p.bytes, p.period).toBe(byHour.get(p.period) ?? 0);
    expect(await value(page, "overview-usage-72h")).toBe(sum(usage, "bytes"));
    // The lag table lists the hours with events: the simulated window's.
    expect(
      await page.locator("[data-testid=overview-lag-table] tr[data-hour]").count(),
    ).toBeGreaterThan(0);

    // Charts are drawn (Chart.js from the page's JSON): docs/screenshots/, light and dark.
    expect(await page.evaluate(() => document.querySelectorAll("canvas[data-chart]").length)).toBe(
      2,
    );
    await page.waitForFunction(
      () => typeof (window as unknown as { Chart?: unknown }).Chart === "function",
    );
    await shoot(page, "console-overview");
  });

  it("clicks through customers → customer → SIM, each figure as the CLI prints it, and downloads the statement CSV the CLI writes", async () => {
    await page.goto(`${rig.adminUrl}/console/customers`);
    const c = rig.mappedCustomer;
    await Promise.all([
      page.waitForURL(new RegExp(`/console/customers/${c}$`)),
      page.click(`[data-testid=customer-row][data-customer=${c}] a`),
    ]);
    expect(await page.textContent("[data-testid=customer-id]")).toBe(c);

    const lines = await page.$$eval("[data-testid=statement-line]", (trs) =>
      trs.map((tr) => ({
        sim: tr.getAttribute("data-sim"),
        bytes: Number(tr.getAttribute("data-value")),
      })),
    );
    const sims = await page.$$eval("[data-testid=customer-sim]", (trs) =>
      trs.map((tr) => ({
        sim: tr.getAttribute("data-sim") as string,
        bytes: Number(tr.getAttribute("data-value")),
      })),
    );
    expect(sims.length).toBeGreaterThan(0);
    const days = await page.$$eval("[data-testid=customer-usage-table] tr[data-period]", (trs) =>
      trs.map((tr) => ({
        period: tr.getAttribute("data-period") as string,
        bytes: Number(tr.getAttribute("data-value")),
      })),
    );
    // The CSV download is `simmeter statement --format csv`, byte for byte.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.click("[data-testid=statement-csv]"),
    ]);
    const csvPath = join(tempDir(), "statement.csv");
    await download.saveAs(csvPath);
    const simArgs = ["--sim", ...sims.map((x) => x.sim)];
    const [stJson, parityJson, totalsJson, byDayJson, cliCsv, assignmentsJson] = await Promise.all([
      rig.cli(["statement", "--customer", c, "--period", "current", "--format", "json"]),
      rig.cli(["reconcile", "--period", "current", "--json"]),
      rig.cli(["usage", "--by", "total", ...simArgs, "--json"]),
      rig.cli([
        "usage",
        "--by",
        "day",
        "--from",
        (days[0] as { period: string }).period,
        ...simArgs,
        "--json",
      ]),
      runCli(["statement", "--customer", c, "--period", "current", "--format", "csv"], rig.env),
      rig.cli(["customers", "list", "--json"]),
    ]);
    const st = stJson as Row;
    expect(lines).toEqual((st.lines as Row[]).map((l) => ({ sim: l.sim_sid, bytes: l.bytes })));
    expect(await value(page, "statement-total")).toBe(st.total);
    expect(await value(page, "statement-invoice-quantity")).toBe(st.invoice_quantity);
    expect(readFileSync(csvPath, "utf8")).toBe(cliCsv.stdout);
    const current = (parityJson as Row[]).find((r) => r.customer === c) as Row;
    const row = page.locator("[data-testid=parity-row][data-period=current]");
    for (const k of [
      "counted",
      "late_in",
      "carried_out",
      "unreported",
      "reported",
      "invoice_quantity",
      "difference",
    ])
      expect(Number(await row.locator(`[data-field=${k}]`).getAttribute("data-value")), k).toBe(
        current[k],
      );

    // Bytes per SIM, and usage per day of the customer's SIMs (each SIM belongs to one customer
    // in this fleet, so they equal `usage` of those SIMs).
    const totals = rowsOf(totalsJson);
    const totalOf = (sim: string) =>
      num(pick(totals.find((t) => pick(t, "sim_sid") === sim) ?? {}, "bytes"));
    for (const x of sims) expect(x.bytes, x.sim).toBe(totalOf(x.sim));
    expect(await value(page, "customer-bytes")).toBe(sum(totals, "bytes"));
    const byDay = rowsOf(byDayJson);
    for (const d of days)
      expect(d.bytes, d.period).toBe(
        byDay.filter((u) => u.period === d.period).reduce((n, u) => n + num(u.bytes), 0),
      );

    await shoot(page, "console-customer");

    // → SIM: its sessions with their readings, its bytes, its customer history.
    const sim = (sims[0] as { sim: string }).sim;
    await Promise.all([
      page.waitForURL(new RegExp(`/console/sims/${sim}$`)),
      page.click(`[data-testid=customer-sim][data-sim=${sim}] [data-testid=sim-link]`),
    ]);
    expect(await page.textContent("[data-testid=sim-sid]")).toBe(sim);
    expect(await value(page, "sim-bytes")).toBe(totalOf(sim));
    expect(await page.locator("[data-testid=sim-session]").count()).toBeGreaterThan(0);
    expect(await page.locator("[data-testid=reading]").count()).toBeGreaterThan(0);
    expect(
      await page.getAttribute(`[data-testid=sim-customer][data-customer=${c}]`, "data-value"),
    ).toBe(String(await value(page, "sim-bytes")));
    const own = rowsOf(assignmentsJson).filter((a) => pick(a, "target_id") === sim);
    expect(await page.locator("[data-testid=sim-assignments] tr").count()).toBe(own.length);
    await page.waitForFunction(() => document.body.getAttribute("data-ready") === "1");
  });

  it("lists quarantined events as the CLI does, filters them by reason, pretty-prints the raw event, and requeues the old one, which is then counted", async () => {
    await page.goto(`${rig.adminUrl}/console/quarantine`);
    const [listJson, beforeJson] = await Promise.all([
      rig.cli(["quarantine", "list", "--limit", "100", "--json"]),
      rig.cli(["usage", "--by", "total", "--sim", rig.oldEvent.sim, "--json"]),
    ]);
    const cliRows = rowsOf(listJson);
    const ids = await page.$$eval("[data-testid=quarantine-row]", (trs) =>
      trs.map((tr) => Number(tr.getAttribute("data-id"))),
    );
    expect(ids).toEqual(cliRows.map((r) => r.id));
    await page.fill("input[name=reason]", "retention");
    await Promise.all([
      page.waitForURL(/reason=retention/),
      page.click("[data-testid=quarantine-filter] button"),
    ]);
    const rows = page.locator("[data-testid=quarantine-row]");
    expect(await rows.count()).toBe(1);
    expect(await rows.first().locator("[data-field=reason]").textContent()).toContain(
      "40-day retention",
    );
    const id = Number(await rows.first().getAttribute("data-id"));
    await page.click(`a[href="/console/quarantine/${id}"]`);
    const raw = await page.textContent("[data-testid=quarantine-raw]");
    expect(raw).toContain(`"event_sid": "${rig.oldEvent.sid}"`);
    expect(raw).toContain("\n  ");

    const before = rowsOf(beforeJson);
    await page.click("[data-testid=requeue-one]");
    expect(await page.textContent("[data-testid=confirm-requeue-events]")).toBe("1");
    await Promise.all([
      page.waitForURL(/\/console\/quarantine\?flash=/),
      page.click("[data-testid=confirm]"),
    ]);
    expect(await page.textContent("[data-testid=flash]")).toContain("Requeued 1 event: 1 counted");
    const [afterJson, listedJson] = await Promise.all([
      rig.cli(["usage", "--by", "total", "--sim", rig.oldEvent.sim, "--json"]),
      rig.cli(["quarantine", "list", "--reason", "retention", "--json"]),
    ]);
    const after = rowsOf(afterJson);
    expect(sum(after, "bytes") - sum(before, "bytes")).toBe(rig.oldEvent.bytes);
    const listed = rowsOf(listedJson);
    expect(listed.map((r) => r.counted)).toEqual([true]);

    // The broken one is quarantined again, with its reason.
    await page.goto(`${rig.adminUrl}/console/quarantine?reason=iccid`);
    await page.click("[data-testid=requeue-matching]");
    await Promise.all([page.waitForURL(/flash=/), page.click("[data-testid=confirm]")]);
    expect(await page.textContent("[data-testid=flash]")).toContain("1 quarantined again");
  });

  it("shows stopped rows with Stripe's error as report --status does; once the cause is fixed, retry sends them", async () => {
    await page.goto(`${rig.adminUrl}/console/billing`);
    const status = (await rig.cli(["report", "--status", "--json"])) as Row;
    const stopped = status.stopped as Row[];
    expect(await value(page, "billing-stopped-rows")).toBe(stopped.length);
    const shown = await page.$$eval(
      "[data-testid=billing-stopped] [data-testid=outbox-row]",
      (trs) => trs.map((tr) => tr.getAttribute("data-identifier")),
    );
    expect(shown.sort()).toEqual(stopped.map((r) => r.identifier).sort());
    expect(await page.textContent("[data-testid=billing-stopped]")).toMatch(/No such customer/i);
    expect(stopped.every((r) => pick(r, "customer_id") === rig.refused)).toBe(true);

    rig.emu.setFaults({});
    await page.click("[data-testid=retry-failed]");
    expect(Number(await page.textContent("[data-testid=confirm-retry-rows]"))).toBe(stopped.length);
    await Promise.all([
      page.waitForURL(/\/console\/billing\?flash=/, { timeout: 45_000 }),
      page.click("[data-testid=confirm]"),
    ]);
    const flash = await page.textContent("[data-testid=flash]");
    expect(flash).toContain(
      `${stopped.length} stopped row${stopped.length === 1 ? "" : "s"} put back in line`,
    );
    expect(flash).toMatch(/Report run \S+: \d+ sent/);
    await expect
      .poll(
        async () => {
          const s = (await rig.cli(["report", "--status", "--json"])) as Row;
          return ((s.stopped ?? s.failed) as Row[]).length;
        },
        { timeout: 20_000 },
      )
      .toBe(0);
    await page.goto(`${rig.adminUrl}/console/billing`);
    expect(await value(page, "billing-stopped-rows")).toBe(0);
    // Stripe now holds what was counted for the customer it refused.
    await expect
      .poll(
        async () => {
          const rows = (await rig.cli(["reconcile", "--period", "current", "--json"])) as Row[];
          const r = rows.find((x) => x.customer === rig.refused) as Row;
          return [r.unreported, r.difference];
        },
        { timeout: 30_000 },
      )
      .toEqual([0, 0]);
  });

  it("assigns an unmapped SIM from the page (same validation as customers assign), and its usage moves to the customer", async () => {
    await page.goto(`${rig.adminUrl}/console/unmapped`);
    const unmapped = rowsOf(await rig.cli(["usage", "--unmapped", "--json"]));
    const row = page.locator(`[data-testid=unmapped-row][data-sim=${rig.unmappedSim}]`);
    const bytes = Number(await row.getAttribute("data-value"));
    expect(bytes).toBe(
      num(pick(unmapped.find((u) => pick(u, "sim_sid") === rig.unmappedSim) ?? {}, "bytes")),
    );
    expect(bytes).toBeGreaterThan(0);
    const target = rig.mappedCustomer;

    // A bad customer id is refused with the CLI's message, nothing recorded.
    await row.locator("input[name=customer]").fill("acme");
    await row.locator("button").click();
    expect(await page.textContent("[data-testid=assign-problem]")).toContain(
      "is not a Stripe customer id",
    );
    expect(await page.isDisabled("[data-testid=confirm]")).toBe(true);

    await page.goto(`${rig.adminUrl}/console/unmapped`);
    await row.locator("input[name=customer]").fill(target);
    await row.locator("button").click();
    expect(await value(page, "assign-unmapped-bytes")).toBe(bytes);
    await Promise.all([
      page.waitForURL(new RegExp(`/console/sims/${rig.unmappedSim}\\?flash=`)),
      page.click("[data-testid=confirm]"),
    ]);
    expect(await page.textContent("[data-testid=flash]")).toContain(
      `Assigned sim ${rig.unmappedSim} to ${target}`,
    );
    expect(
      await page.getAttribute(`[data-testid=sim-customer][data-customer=${target}]`, "data-value"),
    ).toBe(String(bytes));
    const [unmappedAfter, assignments] = await Promise.all([
      rig.cli(["usage", "--unmapped", "--json"]),
      rig.cli(["customers", "list", "--json"]),
    ]);
    expect(rowsOf(unmappedAfter)).toEqual([]);
    const assigned = rowsOf(assignments).filter((a) => pick(a, "target_id") === rig.unmappedSim);
    expect(assigned.map((a) => pick(a, "customer_id"))).toEqual([target]);

    // Moving hours already billed to one customer to another needs the explicit re-bill.
    const other = rig.customers.find((x) => x !== target) as string;
    const from = new Date(Date.now() - 48 * HOUR_MS).toISOString().slice(0, 16);
    await page.goto(
      `${rig.adminUrl}/console/assign?target_type=sim&target_id=${rig.unmappedSim}&customer=${other}&from=${from}`,
    );
    expect(await page.textContent("[data-testid=rebill-required]")).toContain(
      "already attributed to another customer",
    );
    expect(await page.textContent("[data-testid=moves]")).toContain(`${target} → ${other}`);
    expect(await page.getAttribute("input[name=rebill]", "value")).toBe("1");
  });

  it("refuses a form posted from another origin, and a POST without or with a foreign CSRF token", async () => {
    const evil = await hostileSite(
      `<form id="f" method="post" action="${rig.adminUrl}/console/assign"><input name="target_type" value="sim"><input name="target_id" value="${rig.mappedSim}"><input name="customer" value="cus_evil"><input name="rebill" value="1"></form><script>document.getElementById("f").submit()</script>`,
    );
    try {
      const hostile = await context.newPage();
      const answered = hostile.waitForResponse((r) =>
        r.url().startsWith(`${rig.adminUrl}/console/assign`),
      );
      await hostile.goto(evil.url);
      expect((await answered).status()).toBe(403);
      await hostile.close();
    } finally {
      await evil.close();
    }
    // Signed in, but without the page's token, or with another session's.
    const post = (headers: Record<string, string>, body: string) =>
      fetch(`${rig.adminUrl}/console/assign`, {
        method: "POST",
        redirect: "manual",
        headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
        body,
      });
    const cookies = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
    const body = `target_type=sim&target_id=${rig.mappedSim}&customer=cus_evil&rebill=1`;
    expect((await post({ cookie: cookies }, body)).status).toBe(403);
    const other = await browser.newContext();
    const p2 = await other.newPage();
    await login(p2, rig.adminUrl, rig.token);
    await p2.goto(`${rig.adminUrl}/console/billing/retry`);
    const foreign = await p2.getAttribute("input[name=_csrf]", "value");
    await other.close();
    expect(
      (await post({ cookie: cookies }, `${body}&_csrf=${encodeURIComponent(foreign ?? "")}`))
        .status,
    ).toBe(403);
    const customers = rowsOf(await rig.cli(["customers", "list", "--json"]));
    expect(customers.some((c) => pick(c, "customer_id") === "cus_evil")).toBe(false);
  });

  it("serves bull-board for the ingest and report queues at /console/queues, and refuses its job-adding and cleaning calls", async () => {
    await page.goto(`${rig.adminUrl}/console/queues`);
    await expect
      .poll(() => page.locator("text=ingest").count(), { timeout: 15_000 })
      .toBeGreaterThan(0);
    const api = await page.evaluate(async () => {
      const r = await fetch("/console/queues/api/queues");
      return { status: r.status, body: (await r.json()) as { queues: { name: string }[] } };
    });
    expect(api.status).toBe(200);
    expect(api.body.queues.map((q) => q.name).sort()).toEqual(["ingest", "report"]);
    const refused = await page.evaluate(async () => {
      const add = await fetch("/console/queues/api/queues/ingest/add", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "deliveries", data: {} }),
      });
      const clean = await fetch("/console/queues/api/queues/ingest/clean/failed", {
        method: "PUT",
      });
      const retry = await fetch("/console/queues/api/queues/ingest/retry/failed", {
        method: "PUT",
      });
      return [add.status, clean.status, retry.status];
    });
    expect(refused).toEqual([403, 403, 200]);
  });

  it("signs out: the session cookie is gone and pages send the browser back to the login form", async () => {
    await page.goto(`${rig.adminUrl}/console`);
    await Promise.all([page.waitForURL(/\/console\/login/), page.click("header form button")]);
    await page.goto(`${rig.adminUrl}/console/billing`);
    expect(page.url()).toMatch(/\/console\/login\?next=%2Fconsole%2Fbilling/);
  });
});

describe("the console without ADMIN_TOKEN (loopback only)", () => {
  let server: Server;
  let url: string;
  let t: TestLedger;
  const SIM = "HS0000000000000000000000000000abcd";

  beforeAll(async () => {
    t = await openTestLedger({ autoClose: false });
    const hour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS - 2 * HOUR_MS;
    await t.sql(
      "insert into sims (sim_sid, iccid, fleet_sid, account_sid, first_seen_at, last_event_at) values (?, '89010000000000000001', null, 'AC1', 0, 0)",
      SIM,
    );
    await t.sql("insert into usage_hourly (sim_sid, hour, bytes) values (?, ?, 4242)", SIM, hour);
    const logger = createLogger("silent");
    const api = {
      ledger: t.ledger,
      now: Date.now,
      planSettings: { graceSeconds: 3600 },
    };
    const app = createAdminApp({
      logger,
      metrics: { contentType: "text/plain", metrics: async () => "" },
      ready: async () => ({ ok: true, checks: {} }),
      api,
      mount: (a) => mountConsole(a, { api, logger }),
    });
    server = await new Promise<Server>((r) => {
      const s = app.listen(0, "127.0.0.1", () => r(s));
    });
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await t?.close();
  });

  it("opens without a login, says reporting is disabled, and still refuses forged and cross-origin forms; a Host that is not loopback is refused", async () => {
    const ctx = await browser.newContext({ colorScheme: "light" });
    const p = await ctx.newPage();
    await p.goto(`${url}/console`);
    expect(p.url()).toBe(`${url}/console`);
    expect(await p.textContent("[data-testid=reporting-disabled]")).toContain("reporting disabled");
    expect(await value(p, "overview-unmapped")).toBe(4242);
    const browserCookie = (await ctx.cookies()).find((c) => c.name === "simmeter_browser");
    expect(browserCookie?.httpOnly).toBe(true);
    expect(browserCookie?.sameSite).toBe("Strict");

    // Another site in the same browser posts a form: refused, nothing recorded.
    const evil = await hostileSite(
      `<form id="f" method="post" action="${url}/console/assign"><input name="target_type" value="sim"><input name="target_id" value="${SIM}"><input name="customer" value="cus_evil"></form><script>document.getElementById("f").submit()</script>`,
    );
    try {
      const hostile = await ctx.newPage();
      const answered = hostile.waitForResponse((r) => r.url().startsWith(`${url}/console/assign`));
      await hostile.goto(evil.url);
      expect((await answered).status()).toBe(403);
      await hostile.close();
    } finally {
      await evil.close();
    }
    // Without the page's token (a script that guessed the cookie names): refused.
    const cookies = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
    const forged = await fetch(`${url}/console/assign`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", cookie: cookies },
      body: `target_type=sim&target_id=${SIM}&customer=cus_evil`,
    });
    expect(forged.status).toBe(403);
    // DNS rebinding: a hostile name that resolves to 127.0.0.1 is refused by its Host.
    const rebound = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${url}/console`, { headers: { host: "evil.example:80" } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    expect(rebound).toBe(403);

    // The operator's own form works: assign the SIM, and its usage is billed to the customer.
    await p.goto(`${url}/console/unmapped`);
    await p
      .locator(`[data-testid=unmapped-row][data-sim=${SIM}] input[name=customer]`)
      .fill("cus_Open1");
    await p.locator(`[data-testid=unmapped-row][data-sim=${SIM}] button`).click();
    await Promise.all([p.waitForURL(/flash=/), p.click("[data-testid=confirm]")]);
    expect(await p.textContent("[data-testid=flash]")).toContain(
      "4,242 bytes of unmapped usage are now billed to cus_Open1",
    );
    expect(
      await p.getAttribute("[data-testid=sim-customer][data-customer=cus_Open1]", "data-value"),
    ).toBe("4242");
    await ctx.close();
  });
});
