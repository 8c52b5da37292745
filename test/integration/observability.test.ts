import { randomUUID } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { z } from "zod";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { runToEnd } from "../helpers/cli.ts";
import { openTestLedger, type TestLedger, testBackend } from "../helpers/ledger.ts";
import { type SimmeterProcess, startSimmeter, tempDir, waitFor } from "../helpers/process.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";
import { assignSimVia, recentSession } from "../helpers/seed.ts";
import { emulatorWithMeter, stripeEnv } from "../helpers/stripe.ts";

// The observability pack (deploy/prometheus, deploy/grafana, docs/observability.md) against the
// real thing: promtool checks and unit-tests the alert rules, the dashboard is checked for shape and
// its PromQL by promtool, and every metric the rules and the dashboard query is looked for on a
// live /metrics of `simmeter start`, whose exposition passes `promtool check metrics`. `serve` and
// `work` are scraped too: each shows the metrics of its own role only.
//
// A missing promtool fails these tests (never skips them): CI must install it.
//
// The live processes run on a ledger of the vitest project (a SQLite file or a PostgreSQL
// database, its `env` given to the process): the ledger gauges are each adapter's own queries.
// The checks of the deploy files involve no ledger and run in the sqlite project only.

const backend = testBackend();

const ROOT = resolve(import.meta.dirname, "../..");
const RULES = join(ROOT, "deploy/prometheus/simmeter-rules.yml");
const RULES_TEST = join(ROOT, "deploy/prometheus/simmeter-rules.test.yml");
const PROM_CONFIG = join(ROOT, "deploy/prometheus/prometheus.yml");
const DASHBOARD = join(ROOT, "deploy/grafana/simmeter-dashboard.json");
const INSTALL_PROMTOOL =
  "install prometheus: apt-get install -y --no-install-recommends prometheus";

/** promtool, run to completion without blocking this process (the Stripe emulator runs here). */
async function promtool(args: string[], o: { input?: string; cwd?: string } = {}) {
  try {
    const r = await runToEnd("promtool", args, { cwd: o.cwd ?? ROOT, input: o.input ?? "" });
    return { status: r.code, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    throw (err as NodeJS.ErrnoException).code === "ENOENT"
      ? new Error(`promtool is not installed: ${INSTALL_PROMTOOL}`)
      : err;
  }
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metric names an expression reads

const PROMQL_WORDS = new Set([
  "and",
  "or",
  "unless",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "offset",
  "inf",
  "nan",
  "atan2",
]);

/**
 * Every metric name in a PromQL expression: identifiers not inside a string, a label matcher, a
 * range, a grouping clause, and not a function, aggregation or keyword.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, "{}")
    .replace(/\[[^\]]*\]/g, "[]")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(?=\s*(.?))/g)) {
    const [, name, next] = m;
    if (!name || next === "(" || PROMQL_WORDS.has(name.toLowerCase())) continue;
    names.add(name);
  }
  return [...names].sort();
}

/** The `expr` of every rule in a rules file written like deploy/prometheus/simmeter-rules.yml. */
function ruleExprs(yaml: string): { name: string; expr: string; record: boolean }[] {
  const out: { name: string; expr: string; record: boolean }[] = [];
  const lines = yaml.split("\n");
  let current: { name: string; record: boolean } | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const head = /^\s*-\s+(alert|record):\s*(\S+)\s*$/.exec(line);
    if (head) {
      current = { name: head[2] as string, record: head[1] === "record" };
      continue;
    }
    const e = /^(\s*)expr:\s*(.*)$/.exec(line);
    if (!e || !current) continue;
    const indent = (e[1] as string).length;
    let expr = e[2] as string;
    if (expr === "|" || expr === ">" || expr === "|-" || expr === ">-") {
      const block: string[] = [];
      while (i + 1 < lines.length) {
        const next = lines[i + 1] as string;
        if (next.trim() !== "" && next.length - next.trimStart().length <= indent) break;
        block.push(next.trim());
        i++;
      }
      expr = block.join(" ").trim();
    }
    out.push({ ...current, expr });
    current = null;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard

/** Grafana's variable syntax: the data source chosen in the dashboard's DS_PROMETHEUS variable. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: a Grafana variable, not a template string
const DS_UID = "${DS_PROMETHEUS}";
const datasource = z.object({ type: z.literal("prometheus"), uid: z.literal(DS_UID) });
const gridPos = z.object({
  h: z.number().int().positive(),
  w: z.number().int().min(1).max(24),
  x: z.number().int().min(0).max(23),
  y: z.number().int().min(0),
});
const target = z.object({
  refId: z.string().regex(/^[A-Z]$/),
  expr: z.string().min(1),
  datasource,
  legendFormat: z.string().optional(),
});
const panel = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("row"),
    id: z.number().int(),
    title: z.string().min(1),
    gridPos,
    collapsed: z.boolean(),
    panels: z.array(z.unknown()),
  }),
  z.object({
    type: z.enum(["timeseries", "stat", "gauge", "bargauge", "table"]),
    id: z.number().int(),
    title: z.string().min(1),
    description: z.string().min(1),
    gridPos,
    datasource,
    targets: z.array(target).min(1),
    fieldConfig: z.object({
      defaults: z.object({}).passthrough(),
      overrides: z.array(z.unknown()),
    }),
    options: z.object({}).passthrough(),
  }),
]);
/** The parts of Grafana's dashboard model (schemaVersion 39) this dashboard relies on. */
const dashboardSchema = z.object({
  uid: z.string().regex(/^[A-Za-z0-9_-]{1,40}$/),
  title: z.string().min(1),
  schemaVersion: z.number().int().min(39),
  version: z.number().int(),
  editable: z.boolean(),
  id: z.null(),
  time: z.object({ from: z.string(), to: z.string() }),
  refresh: z.string(),
  tags: z.array(z.string()),
  annotations: z.object({ list: z.array(z.unknown()) }),
  templating: z.object({
    list: z.array(
      z
        .object({
          name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/),
          type: z.enum(["datasource", "query", "custom", "interval", "constant"]),
        })
        .passthrough(),
    ),
  }),
  panels: z.array(panel).min(1),
});
type Dashboard = z.infer<typeof dashboardSchema>;

function loadDashboard(): Dashboard {
  return dashboardSchema.parse(JSON.parse(readFileSync(DASHBOARD, "utf8")));
}

/** Every PromQL query of the dashboard: panel targets and query variables. */
function dashboardQueries(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of d.panels)
    if (p.type !== "row") for (const t of p.targets) out.push({ where: p.title, expr: t.expr });
  for (const v of d.templating.list) {
    if (v.type !== "query") continue;
    const q = v.query as { query?: string } | string;
    const text = typeof q === "string" ? q : (q.query ?? "");
    // label_values(<series selector>, <label>): the selector is PromQL.
    const m = /^label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)$/.exec(text);
    out.push({ where: `variable ${v.name}`, expr: m ? (m[1] as string) : text });
  }
  return out;
}

/** A Grafana query as plain PromQL: its variables replaced by values Prometheus would see. */
const asPromQL = (expr: string) =>
  expr
    .replaceAll("$__rate_interval", "5m")
    .replaceAll("$__interval", "1m")
    .replaceAll("$__range", "1h")
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, ".*");

// ---------------------------------------------------------------------------------------------
// The exposition format

/** sample name → its lines, and family name → TYPE, from a /metrics answer. */
function parseExposition(text: string) {
  const samples = new Map<string, string[]>();
  const types = new Map<string, string>();
  const helps: string[] = [];
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1] as string, type[2] as string);
    if (line.startsWith("# HELP ")) helps.push(line.split(" ")[2] as string);
    if (line.startsWith("#") || line.trim() === "") continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)/.exec(line);
    if (!m) continue;
    const list = samples.get(m[1] as string) ?? [];
    list.push(line);
    samples.set(m[1] as string, list);
  }
  return { samples, types, helps };
}

/**
 * prom-client's default gauges nodejs_active_{handles,requests,resources}_total end in _total;
 * the standard Node.js dashboards query them by these names, so they are kept. Any other lint
 * (a simmeter metric without help, a counter without _total, a unit not in base units…) fails.
 */
const ACCEPTED_LINTS = [
  /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/,
];

async function checkMetrics(text: string): Promise<void> {
  const r = await promtool(["check", "metrics"], { input: text });
  const lines = `${r.stdout}\n${r.stderr}`
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  const serious = lines.filter((l) => !ACCEPTED_LINTS.some((re) => re.test(l)));
  // 0: clean; 3: lint problems only (all of them accepted ones, checked above); 1: unparsable.
  expect(serious, `promtool check metrics:\n${lines.join("\n")}`).toEqual([]);
  expect([0, 3]).toContain(r.status);
}

// ---------------------------------------------------------------------------------------------

// no ledger involved
describe.runIf(backend === "sqlite")("Prometheus rules (deploy/prometheus)", () => {
  it("promtool check rules passes", async () => {
    const r = await promtool(["check", "rules", RULES]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const found = Number(/SUCCESS: (\d+) rules found/.exec(r.stdout)?.[1]);
    // The rule parser of this test reads every rule promtool found.
    expect(ruleExprs(readFileSync(RULES, "utf8"))).toHaveLength(found);
  });

  it("promtool test rules proves the alerts fire (no report for two intervals, stopped rows, …)", async () => {
    const r = await promtool(["test", "rules", RULES_TEST]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("SUCCESS");
    // The unit tests expect these alerts to fire at some evaluation, not only to stay silent.
    const tests = readFileSync(RULES_TEST, "utf8");
    for (const alert of [
      "SimmeterReportStale",
      "SimmeterReportRowsStopped",
      "SimmeterUnreportedBytesOld",
      "SimmeterUnmappedUsage",
      "SimmeterQuarantineGrowing",
      "SimmeterWebhookAuthFailures",
      "SimmeterIngestJobsFailed",
      "SimmeterRedisEvictionPolicy",
    ])
      expect(tests).toMatch(
        new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels:`, "m"),
      );
  });

  it("every alert has a severity, a summary and a description naming what to run", () => {
    const yaml = readFileSync(RULES, "utf8");
    const alerts = yaml.split(/\n(?= +- alert: )/).slice(1);
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    for (const a of alerts) {
      const name = /- alert: (\S+)/.exec(a)?.[1];
      expect(a, name).toMatch(/\n\s+severity: (critical|warning)\n/);
      expect(a, name).toMatch(/\n\s+summary: /);
      expect(a, name).toMatch(/\n\s+description: /);
      expect(a, name).toMatch(/`simmeter [a-z]|`redis-cli|maxmemory-policy noeviction/);
    }
  });

  it("the example prometheus.yml passes promtool check config (with the token file in place)", async () => {
    const dir = tempDir("simmeter-prom-");
    const tokenFile = join(dir, "simmeter-admin-token");
    writeFileSync(tokenFile, "x".repeat(32), { mode: 0o400 });
    const config = readFileSync(PROM_CONFIG, "utf8");
    expect(config).toMatch(/credentials_file: \/etc\/prometheus\/simmeter-admin-token/);
    writeFileSync(
      join(dir, "prometheus.yml"),
      config.replaceAll("/etc/prometheus/simmeter-admin-token", tokenFile),
    );
    copyFileSync(RULES, join(dir, "simmeter-rules.yml"));
    const r = await promtool(["check", "config", "prometheus.yml"], { cwd: dir });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: 1 rule files found/);
  });
});

// no ledger involved
describe.runIf(backend === "sqlite")(
  "Grafana dashboard (deploy/grafana/simmeter-dashboard.json)",
  () => {
    it("loads: Grafana's dashboard model, the data source a DS_PROMETHEUS variable, panels on a 24-column grid", () => {
      const d = loadDashboard();
      const ds = d.templating.list.find((v) => v.name === "DS_PROMETHEUS");
      expect(ds).toMatchObject({ type: "datasource", query: "prometheus" });
      const ids = d.panels.map((p) => p.id);
      expect(new Set(ids).size).toBe(ids.length);
      // No two panels overlap, none runs off the grid.
      const cells = new Set<string>();
      for (const p of d.panels) {
        const g = p.gridPos;
        expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
        for (let x = g.x; x < g.x + g.w; x++)
          for (let y = g.y; y < g.y + g.h; y++) {
            const cell = `${x},${y}`;
            expect(cells.has(cell), `${p.title} overlaps at ${cell}`).toBe(false);
            cells.add(cell);
          }
      }
      for (const p of d.panels) {
        if (p.type === "row") continue;
        const refs = p.targets.map((t) => t.refId);
        expect(new Set(refs).size, p.title).toBe(refs.length);
      }
      const titles = d.panels.map((p) => p.title.toLowerCase()).join("\n");
      for (const wanted of [
        "deliveries by outcome",
        "ingested",
        "ingest lag p50 / p99",
        "queue depth",
        "unreported, unmapped and unbilled bytes",
        "last successful report",
        "stopped outbox rows",
        "quarantine rows",
        "stripe calls by outcome",
        "resident memory",
        "event loop lag",
      ])
        expect(titles).toContain(wanted);
    });

    it("every query is valid PromQL (promtool, as recording rules)", async () => {
      const queries = dashboardQueries(loadDashboard());
      const rules = [
        "groups:",
        "  - name: dashboard",
        "    rules:",
        ...queries.flatMap((q, i) => [
          `      - record: dashboard_query_${i}`,
          `        expr: ${JSON.stringify(asPromQL(q.expr))}`,
        ]),
      ].join("\n");
      const dir = tempDir("simmeter-dash-");
      writeFileSync(join(dir, "dashboard-rules.yml"), `${rules}\n`);
      const r = await promtool(["check", "rules", "dashboard-rules.yml"], { cwd: dir });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`SUCCESS: ${queries.length} rules found`);
    });

    it("extracts metric names from PromQL (the helper the live check relies on)", () => {
      expect(
        metricNames(
          'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{job=~"$job",x="y{z}"}[$__rate_interval]))) > on (instance) b and c offset 5m or time() - d',
        ),
      ).toEqual(["a_bucket", "b", "c", "d"]);
      expect(metricNames("simmeter:ingest_lag_seconds:p99_5m > 900")).toEqual([
        "simmeter:ingest_lag_seconds:p99_5m",
      ]);
      expect(metricNames('up{job="simmeter"} == 0')).toEqual(["up"]);
    });
  },
);

// ---------------------------------------------------------------------------------------------
// Live scrapes

const HOUR = 3_600_000;
const ADMIN_TOKEN = `obs-${randomUUID()}`;

type Live = { app: SimmeterProcess; adminUrl: string; t: TestLedger };

/** `simmeter <role>` on `t` (default: a new ledger of its own, closed when the test finishes) */
async function startRole(
  role: "start" | "serve" | "work",
  env: Record<string, string>,
  ledger?: TestLedger,
): Promise<Live> {
  const adminPort = await freePort();
  const t = ledger ?? (await openTestLedger({ file: true }));
  const app = await startSimmeter(role, {
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: `obs${role}${randomUUID().slice(0, 8)}`,
    ...t.env,
    ALLOW_UNSIGNED: "true",
    ADMIN_HOST: "127.0.0.1",
    ADMIN_PORT: String(adminPort),
    ADMIN_TOKEN,
    ...env,
  });
  return { app, adminUrl: `http://127.0.0.1:${adminPort}`, t };
}

async function scrape(live: Live): Promise<string> {
  let text = "";
  await waitFor(
    async () => {
      const res = await fetch(`${live.adminUrl}/metrics`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      }).catch(() => null);
      if (!res?.ok) return false;
      text = await res.text();
      return true;
    },
    `/metrics on the admin listener ${live.adminUrl} (ADMIN_PORT)`,
    15_000,
    200,
  );
  return text;
}

describe("a live /metrics", () => {
  const emu = emulatorWithMeter();

  it("simmeter start: passes promtool check metrics and has every metric the rules and the dashboard query", async () => {
    const t = await openTestLedger({ file: true });
    const simSid = `HS${"4".repeat(32)}`;
    await assignSimVia(t.ledger, {
      sim: simSid,
      customer: "cus_obs",
      effectiveFrom: Date.now() - 48 * HOUR,
    });
    const live = await startRole("start", { ...stripeEnv(emu()), REPORT_INTERVAL_SECONDS: "1" }, t);
    try {
      const events = recentSession(simSid, 3);
      const res = await fetch(`${live.app.url}/webhooks/event-streams`, {
        method: "POST",
        body: JSON.stringify(events),
      });
      expect(res.status).toBe(200);
      await waitFor(
        async () =>
          ((await t.sql<{ n: number }>("select count(*) as n from seen_events"))[0]?.n ?? 0) === 3,
        "the delivery's events counted",
        30_000,
        100,
      );
      await waitFor(
        () => emu().totalsByCustomer(EVENT_NAME).get("cus_obs") === 3000,
        "the usage reported to Stripe",
        30_000,
        100,
      );
      let text = "";
      await waitFor(
        async () => {
          text = await scrape(live);
          const last = parseExposition(text).samples.get(
            "simmeter_report_last_success_timestamp_seconds",
          );
          return Boolean(last?.some((l) => Number(l.split(" ").pop()) > 0));
        },
        "a successful report run on /metrics",
        20_000,
        200,
      );
      await checkMetrics(text);
      const { samples, helps, types } = parseExposition(text);
      // One exposition: no family twice (Prometheus refuses a repeated HELP/TYPE).
      expect(new Set(helps).size).toBe(helps.length);
      // Default metrics are prom-client's, unprefixed, and the process's: counted once although
      // both threads collect them.
      expect(types.get("process_resident_memory_bytes")).toBe("gauge");
      expect([...types.keys()].filter((n) => n.startsWith("simmeter_process_"))).toEqual([]);
      expect(samples.get("nodejs_version_info")?.map((l) => l.split(" ").pop())).toEqual(["1"]);

      // Every metric the alert rules and the dashboard read is on /metrics, with samples.
      const rules = ruleExprs(readFileSync(RULES, "utf8"));
      const recorded = new Set(rules.filter((r) => r.record).map((r) => r.name));
      // `up` is Prometheus's own, per target.
      const synthetic = new Set(["up"]);
      const wanted = new Map<string, string>();
      for (const r of rules) for (const n of metricNames(r.expr)) wanted.set(n, `rule ${r.name}`);
      for (const q of dashboardQueries(loadDashboard()))
        for (const n of metricNames(asPromQL(q.expr))) wanted.set(n, `dashboard: ${q.where}`);
      expect(wanted.size).toBeGreaterThan(20);
      const missing: string[] = [];
      for (const [name, where] of wanted) {
        if (synthetic.has(name)) continue;
        if (name.includes(":")) {
          if (!recorded.has(name)) missing.push(`${name} (${where}): no recording rule`);
          continue;
        }
        if (!samples.has(name)) missing.push(`${name} (${where})`);
      }
      expect(missing, "queried but not on a live /metrics").toEqual([]);
    } finally {
      await live.app.stop();
    }
  }, 120_000);

  it("simmeter serve and simmeter work: each has the admin listener and only its own role's metrics", async () => {
    const serve = await startRole("serve", {});
    const work = await startRole("work", stripeEnv(emu()));
    try {
      const res = await fetch(`${serve.app.url}/webhooks/event-streams`, {
        method: "POST",
        body: JSON.stringify(recentSession(`HS${"3".repeat(32)}`, 1)),
      });
      expect(res.status).toBe(200);
      const [s, w] = [await scrape(serve), await scrape(work)];
      await checkMetrics(s);
      await checkMetrics(w);
      const serveTypes = parseExposition(s).types;
      const workTypes = parseExposition(w).types;
      for (const types of [serveTypes, workTypes]) {
        expect(types.get("process_resident_memory_bytes")).toBe("gauge");
        expect(types.get("nodejs_eventloop_lag_p99_seconds")).toBe("gauge");
      }
      // The receiver's families…
      for (const name of [
        "simmeter_deliveries_total",
        "simmeter_received_events_total",
        "simmeter_enqueue_batch_deliveries",
      ]) {
        expect(serveTypes.has(name), `serve has ${name}`).toBe(true);
        expect(workTypes.has(name), `work has no ${name}`).toBe(false);
      }
      // … and the worker's (ledger gauges included).
      for (const name of [
        "simmeter_ingested_events_total",
        "simmeter_quarantined_events_total",
        "simmeter_ingest_lag_seconds",
        "simmeter_ingest_commit_jobs",
        "simmeter_stripe_calls_total",
        "simmeter_report_failed_rows",
        "simmeter_report_last_success_timestamp_seconds",
        "simmeter_report_interval_seconds",
        "simmeter_unreported_bytes",
        "simmeter_unmapped_bytes",
        "simmeter_quarantine_rows",
        "simmeter_outbox_oldest_pending_age_seconds",
      ]) {
        expect(workTypes.has(name), `work has ${name}`).toBe(true);
        expect(serveTypes.has(name), `serve has no ${name}`).toBe(false);
      }
      // The ingest queue is read by both (whichever runs, the failed jobs show).
      expect(serveTypes.get("simmeter_queue_depth")).toBe("gauge");
      expect(workTypes.get("simmeter_queue_depth")).toBe("gauge");
    } finally {
      await serve.app.stop();
      await work.app.stop();
    }
  }, 120_000);
});
