// The operator console: server-rendered pages under /console on the admin listener, each figure
// read from the same view (src/views/) the CLI's --json and /api print. Auth is the admin app's
// (src/admin/app.ts: the bearer token, or this console's session cookie); every POST needs a
// csrf-csrf token bound to the session (or, without ADMIN_TOKEN, to a per-browser cookie).
// docs/console.md describes the pages; docs/adr/0010-operator-console.md the choices.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import express, { type NextFunction, type Request, type Response } from "express";
import type { ComponentChildren } from "preact";
import { invoiceParity, statement } from "../billing/parity.ts";
import type { CustomerBilling } from "../billing/periods.ts";
import { isLoopback } from "../config.ts";
import {
  type AssignInput,
  assignmentCustomers,
  InputError,
  previewMoves,
  RebillRequired,
  unmappedUsage,
  validateAssignment,
} from "../customers/customers.ts";
import { effectiveHour } from "../customers/resolve.ts";
import type { Db } from "../db/client.ts";
import {
  ingestWorkerRunning,
  listQuarantineRows,
  type QuarantineFilter,
  RequeueSelectionError,
} from "../ingest/requeue.ts";
import { parseUtcTime } from "../lib/time.ts";
import {
  CustomerSummaryParams,
  customerDetail,
  customerSummaryList,
  UnknownCustomer,
} from "../views/customer-usage.ts";
import { CursorError } from "../views/json.ts";
import { OutboxRowParams, outboxRowList } from "../views/outbox.ts";
import { lastSentAt, overviewView } from "../views/overview.ts";
import { parityRows, statementCsv } from "../views/parity.ts";
import {
  AnomalyParams,
  anomalyList,
  ledgerCounts,
  QuarantineParams,
  quarantineItem,
  quarantineList,
} from "../views/quarantine.ts";
import { reportStatusView } from "../views/report.ts";
import { IngestLagParams, ingestLag, UsageSeriesParams, usageSeries } from "../views/series.ts";
import { SimQuery, simDetail, UnknownSim } from "../views/sim.ts";
import { UnmappedParams, unmappedList } from "../views/usage.ts";
import {
  assign,
  previewRequeue,
  putFlash,
  requeue,
  requeueFlash,
  retryFlash,
  retryStopped,
  takeFlash,
} from "./actions.ts";
import {
  BROWSER_COOKIE,
  CONSOLE_PREFIX,
  consoleAuth,
  isHttps,
  issueSession,
  SESSION_COOKIE,
  SESSION_MAX_AGE_MS,
  safeNext,
  setConsoleAuth,
  tokenMatches,
} from "./auth.ts";
import { CONSOLE_CSS, CONSOLE_JS } from "./client.ts";
import { csrfSync } from "./csrf.ts";
import { type ConsoleDeps, periodsNow, within } from "./deps.ts";
import { type Flash, type PageContext, renderPage } from "./layout.tsx";
import { BillingPage, RetryConfirmPage } from "./pages/billing.tsx";
import { CustomerPage, type CustomerPageData, CustomersPage } from "./pages/customers.tsx";
import { OverviewPage } from "./pages/overview.tsx";
import {
  AnomaliesPage,
  QuarantineItemPage,
  QuarantinePage,
  RequeueConfirmPage,
} from "./pages/quarantine.tsx";
import { SimPage } from "./pages/sim.tsx";
import {
  type AssignConfirmData,
  AssignConfirmPage,
  LoginPage,
  MessagePage,
  UnmappedPage,
} from "./pages/unmapped.tsx";
import { mountQueues } from "./queues.ts";

export type { ConsoleDeps } from "./deps.ts";
export { consoleQueues } from "./deps.ts";

const require_ = createRequire(import.meta.url);

/** The static files, read once: Pico and Chart.js from node_modules, the console's own CSS/JS. */
function loadAssets(): Map<string, { type: string; body: Buffer }> {
  const chartDir = dirname(require_.resolve("chart.js"));
  const files: [string, string, Buffer][] = [
    ["pico.min.css", "text/css", readFileSync(require_.resolve("@picocss/pico/css/pico.min.css"))],
    ["chart.umd.min.js", "text/javascript", readFileSync(join(chartDir, "chart.umd.min.js"))],
    ["console.css", "text/css", Buffer.from(CONSOLE_CSS)],
    ["console.js", "text/javascript", Buffer.from(CONSOLE_JS)],
  ];
  return new Map(
    files.map(([name, type, body]) => [name, { type: `${type}; charset=utf-8`, body }]),
  );
}

const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const one = (v: unknown): string =>
  typeof v === "string" ? v : Array.isArray(v) && typeof v[0] === "string" ? v[0] : "";
const many = (v: unknown): string[] =>
  typeof v === "string"
    ? [v]
    : Array.isArray(v)
      ? v.filter((x): x is string => typeof x === "string")
      : [];

class PageError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function mountConsole(app: express.Express, deps: ConsoleDeps): void {
  const { api, logger } = deps;
  const db: Db = api.db;
  const token = deps.token;
  const assets = loadAssets();
  const router = express.Router();

  const csrf = csrfSync(token);
  const cookieOptions = (req: Request) => ({
    httpOnly: true,
    sameSite: "strict" as const,
    secure: isHttps(req),
    path: CONSOLE_PREFIX,
  });

  router.use((req: Request, res: Response, next: NextFunction) => {
    res.set({
      "X-Frame-Options": "DENY",
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "same-origin",
      "Cache-Control": "no-store",
    });
    if (!req.path.startsWith("/queues")) res.set("Content-Security-Policy", PAGE_CSP);
    else res.set("Content-Security-Policy", "frame-ancestors 'none'");
    next();
  });

  router.get("/assets/:file", (req: Request, res: Response) => {
    const a = assets.get(String(req.params.file));
    if (!a) {
      res.status(404).type("text/plain").send("no such asset");
      return;
    }
    res.set("Cache-Control", "public, max-age=3600");
    res.type(a.type).send(a.body);
  });

  // Without ADMIN_TOKEN the listener is loopback-only and the console has no login. A page of any
  // other site in the operator's browser can still send requests to 127.0.0.1: the Host check
  // stops DNS rebinding (a hostile name resolving to 127.0.0.1 is same-origin to its own page), and
  // the CSRF token, bound to this per-browser id, stops forged forms.
  if (!token) {
    router.use((req: Request, res: Response, next: NextFunction) => {
      if (!isLoopback(req.hostname)) {
        logger.warn(
          { host: req.get("host"), path: req.originalUrl },
          "console request refused: Host is not loopback",
        );
        res
          .status(403)
          .type("text/plain")
          .send(
            "The console without ADMIN_TOKEN answers only to localhost / 127.0.0.1 / [::1] (use an SSH tunnel, or set ADMIN_TOKEN).",
          );
        return;
      }
      let id = (req.cookies as Record<string, string> | undefined)?.[BROWSER_COOKIE];
      if (typeof id !== "string" || !/^[A-Za-z0-9_-]{32}$/.test(id)) {
        id = randomBytes(24).toString("base64url");
        // A new browser: its forms are bound to this id from the first page on (a POST arriving
        // without the cookie gets a fresh id too, so its token cannot match).
        res.cookie(BROWSER_COOKIE, id, { ...cookieOptions(req), maxAge: 365 * 86_400_000 });
      }
      setConsoleAuth(req, { kind: "open", id });
      next();
    });
  }

  const hasBoard = mountQueues(router, deps);
  if (!hasBoard)
    router.use("/queues", (req: Request, res: Response) => {
      send(
        req,
        res,
        "Queues",
        MessagePage({
          title: "Queues",
          message: "This process has no Redis connection for the console.",
        }),
        503,
      );
    });

  router.use(express.urlencoded({ extended: false, limit: "64kb", parameterLimit: 5000 }));

  const context = (req: Request, res: Response): PageContext => ({
    csrf: csrf.generate(req, res, cookieOptions(req)),
    auth: consoleAuth(req),
    reporting: Boolean(api.stripe),
    path: req.originalUrl.split("?")[0] ?? "",
    flash: takeFlash(req.query.flash),
    now: api.now(),
  });
  const send = (
    req: Request,
    res: Response,
    title: string,
    body: ComponentChildren,
    status = 200,
  ) => {
    res
      .status(status)
      .type("text/html; charset=utf-8")
      .send(renderPage(context(req, res), title, body));
  };
  const sendWith = (
    req: Request,
    res: Response,
    title: string,
    body: (ctx: PageContext) => ComponentChildren,
    status = 200,
  ) => {
    const ctx = context(req, res);
    res
      .status(status)
      .type("text/html; charset=utf-8")
      .send(renderPage(ctx, title, body(ctx)));
  };
  const redirectWith = (res: Response, to: string, flash: Flash) => {
    const id = putFlash(flash);
    res.redirect(303, `${to}${to.includes("?") ? "&" : "?"}flash=${id}`);
  };

  // ---- login / logout --------------------------------------------------------------------

  router.get("/login", (req: Request, res: Response) => {
    if (!token) {
      res.redirect(303, CONSOLE_PREFIX);
      return;
    }
    const next = safeNext(req.query.next);
    send(
      req,
      res,
      "Sign in",
      LoginPage({ next, error: null, signedIn: consoleAuth(req).kind === "session" }),
    );
  });

  router.post("/login", (req: Request, res: Response) => {
    if (!token) {
      res.redirect(303, CONSOLE_PREFIX);
      return;
    }
    // No CSRF token before a session exists; a forged login would need the token anyway.
    const next = safeNext((req.body as Record<string, unknown>)?.next);
    if (req.get("origin") !== undefined && !sameHost(req)) {
      send(
        req,
        res,
        "Sign in",
        LoginPage({
          next,
          error: "Refused: the form did not come from this console.",
          signedIn: false,
        }),
        403,
      );
      return;
    }
    if (!tokenMatches((req.body as Record<string, unknown>)?.token, token)) {
      logger.warn({ ip: req.ip }, "console login refused: wrong token");
      send(
        req,
        res,
        "Sign in",
        LoginPage({ next, error: "That is not the ADMIN_TOKEN.", signedIn: false }),
        401,
      );
      return;
    }
    const s = issueSession(token, Date.now());
    res.cookie(SESSION_COOKIE, s.value, { ...cookieOptions(req), maxAge: SESSION_MAX_AGE_MS });
    logger.info({ ip: req.ip }, "console login");
    res.redirect(303, next);
  });

  // Every other POST: same origin (when the browser says) and a valid CSRF token.
  router.use((req: Request, res: Response, next: NextFunction) => {
    if (req.method !== "POST") {
      next();
      return;
    }
    if (req.get("origin") !== undefined && !sameHost(req)) {
      logger.warn(
        { path: req.originalUrl, origin: req.get("origin") },
        "console POST refused: other origin",
      );
      next(
        new PageError(403, "Refused: this form did not come from this console (Origin differs)."),
      );
      return;
    }
    csrf.protect(req, res, next);
  });

  router.post("/logout", (req: Request, res: Response) => {
    res.clearCookie(SESSION_COOKIE, cookieOptions(req));
    res.redirect(303, token ? `${CONSOLE_PREFIX}/login` : CONSOLE_PREFIX);
  });

  // ---- overview --------------------------------------------------------------------------

  router.get("/", async (req: Request, res: Response) => {
    const now = api.now();
    const periods = await periodsNow(deps);
    const overview = overviewView(db, {
      now,
      settings: api.planSettings,
      billing: periods.billing,
    });
    let parity = null;
    let stripeError = periods.error;
    if (api.stripe && periods.source === "stripe") {
      try {
        parity = await parityRows(db, api.stripe.client, periods.billing, "current");
      } catch (err) {
        stripeError = (err as Error).message;
      }
    }
    const q = deps.queues;
    const depth = q
      ? await within(
          q.ingest.getJobCounts("waiting", "active", "delayed", "failed"),
          2000,
          "Redis",
        ).then(
          (c) => ({
            waiting: c.waiting ?? 0,
            active: c.active ?? 0,
            delayed: c.delayed ?? 0,
            failed: c.failed ?? 0,
          }),
          (err: Error) => ({ error: err.message }),
        )
      : null;
    send(
      req,
      res,
      "Overview",
      OverviewPage({
        d: {
          now,
          overview,
          parity,
          periodsSource: periods.source,
          stripeError,
          reporting: Boolean(api.stripe),
          usage: usageSeries(db, UsageSeriesParams.parse({}), now),
          lag: ingestLag(db, IngestLagParams.parse({}), now),
          depth,
          lastRunAt: await lastRun(deps),
        },
      }),
    );
  });

  // ---- customers -------------------------------------------------------------------------

  const stored = (): ReadonlyMap<string, CustomerBilling> =>
    api.billing ? api.billing() : new Map();

  router.get("/customers", (req: Request, res: Response) => {
    const p = CustomerSummaryParams.parse({
      limit: 1000,
      ...(one(req.query.starting_after) ? { starting_after: one(req.query.starting_after) } : {}),
    });
    send(req, res, "Customers", CustomersPage({ list: customerSummaryList(db, p, stored()) }));
  });

  const customerParam = (req: Request): string => {
    const c = String(req.params.customer ?? "");
    if (!/^cus_[A-Za-z0-9]{1,64}$/.test(c))
      throw new PageError(404, `${c} is not a Stripe customer id (cus_…)`);
    return c;
  };

  router.get("/customers/:customer", async (req: Request, res: Response) => {
    const c = customerParam(req);
    let customer: CustomerPageData["customer"];
    try {
      customer = customerDetail(db, c, stored());
    } catch (err) {
      if (err instanceof UnknownCustomer) throw new PageError(404, err.message);
      throw err;
    }
    const now = api.now();
    const by = one(req.query.by) === "hour" ? "hour" : "day";
    const statementPeriod = one(req.query.period) === "previous" ? "previous" : "current";
    const statementBy = one(req.query.statement_by) === "day" ? "day" : "period";
    const d: CustomerPageData = {
      customer,
      usage: usageSeries(db, UsageSeriesParams.parse({ granularity: by, customer: c }), now),
      by,
      reporting: Boolean(api.stripe),
      parity: null,
      statement: null,
      statementError: null,
      statementPeriod,
      statementBy,
      stripeError: null,
    };
    if (api.stripe) {
      const periods = await periodsNow(deps);
      d.stripeError = periods.error;
      const b = periods.billing.get(c);
      if (!b) d.statementError = `${c} was not found among the customers looked up in Stripe`;
      else {
        try {
          d.parity = {
            current: await invoiceParity(db, api.stripe.client, b, "current"),
            previous: await invoiceParity(db, api.stripe.client, b, "previous"),
          };
          d.statement = await statement(db, api.stripe.client, b, statementPeriod, statementBy);
        } catch (err) {
          d.statementError = (err as Error).message;
        }
      }
    }
    send(req, res, c, CustomerPage({ d }));
  });

  router.get("/customers/:customer/statement.csv", async (req: Request, res: Response) => {
    const c = customerParam(req);
    if (!api.stripe)
      throw new PageError(404, "reporting disabled: no STRIPE_SECRET_KEY, so no statement");
    const period = one(req.query.period) === "previous" ? "previous" : "current";
    const by = one(req.query.by) === "day" ? "day" : "period";
    const periods = await periodsNow(deps);
    const b = periods.billing.get(c);
    if (!b) throw new PageError(404, `${c} is not a mapped customer`);
    const s = await statement(db, api.stripe.client, b, period, by);
    res
      .type("text/csv; charset=utf-8")
      .set(
        "Content-Disposition",
        `attachment; filename="statement-${c}-${period}${by === "day" ? "-by-day" : ""}.csv"`,
      )
      .send(statementCsv(s));
  });

  // ---- SIM -------------------------------------------------------------------------------

  router.get("/sims/:sim", (req: Request, res: Response) => {
    const sim = String(req.params.sim ?? "");
    if (!/^HS[0-9a-fA-F]{32}$/.test(sim)) throw new PageError(404, `${sim} is not a Super SIM SID`);
    try {
      const s = simDetail(db, sim, SimQuery.parse({}));
      send(req, res, `SIM ${sim}`, SimPage({ s, customers: assignmentCustomers(db).sort() }));
    } catch (err) {
      if (err instanceof UnknownSim) throw new PageError(404, err.message);
      throw err;
    }
  });

  // ---- billing sync ----------------------------------------------------------------------

  const rows = (q: Record<string, unknown>) =>
    outboxRowList(db, OutboxRowParams.parse({ limit: 100, ...q }));

  router.get("/billing", async (req: Request, res: Response) => {
    const now = api.now();
    const periods = await periodsNow(deps);
    send(
      req,
      res,
      "Billing sync",
      BillingPage({
        d: {
          now,
          status: reportStatusView(db, {
            now,
            settings: api.planSettings,
            billing: periods.billing,
          }),
          stopped: rows({ state: "failed" }),
          pending: rows({ state: "pending" }),
          late: rows({ late: "true" }),
          lastSentAt: lastSentAt(db),
          lastRunAt: await lastRun(deps),
          reporting: Boolean(api.stripe),
          reporterHere: Boolean(deps.queues?.report),
          periodsSource: periods.source,
        },
      }),
    );
  });

  router.get("/billing/retry", (req: Request, res: Response) => {
    sendWith(req, res, "Retry stopped rows", (ctx) =>
      RetryConfirmPage({
        stopped: rows({ state: "failed", limit: 1000 }),
        csrf: ctx.csrf,
        reporterHere: Boolean(deps.queues?.report),
      }),
    );
  });

  router.post("/billing/retry", async (_req: Request, res: Response) => {
    const r = await retryStopped(deps, 25_000);
    logger.info(
      { retried: r.retried, run: r.run?.jobId ?? null },
      "console: stopped outbox rows retried",
    );
    redirectWith(res, `${CONSOLE_PREFIX}/billing`, retryFlash(r));
  });

  // ---- quarantine and anomalies ----------------------------------------------------------

  const sinceOf = (v: string): number | undefined => {
    if (!v) return undefined;
    try {
      return parseUtcTime(v, "since");
    } catch (err) {
      throw new PageError(400, (err as Error).message);
    }
  };

  router.get("/quarantine", (req: Request, res: Response) => {
    const filters = { reason: one(req.query.reason).trim(), since: one(req.query.since).trim() };
    const parsed = QuarantineParams.safeParse({
      limit: "100",
      ...(filters.reason ? { reason: filters.reason } : {}),
      ...(filters.since ? { since: filters.since } : {}),
      ...(one(req.query.starting_after) ? { starting_after: one(req.query.starting_after) } : {}),
    });
    if (!parsed.success) throw new PageError(400, parsed.error.issues[0]?.message ?? "bad filter");
    let list: ReturnType<typeof quarantineList>;
    try {
      list = quarantineList(db, parsed.data);
    } catch (err) {
      if (err instanceof CursorError) throw new PageError(400, err.message);
      throw err;
    }
    send(
      req,
      res,
      "Quarantine",
      QuarantinePage({ list, filters, total: ledgerCounts(db).quarantined }),
    );
  });

  const selectionOf = (src: Record<string, unknown>) => {
    const ids = many(src.id).map((s) => {
      if (!/^\d{1,15}$/.test(s))
        throw new PageError(400, `${JSON.stringify(s)} is not a quarantine row id`);
      return Number(s);
    });
    const reason = one(src.reason).trim();
    const since = one(src.since).trim();
    const filter: QuarantineFilter = {
      ...(ids.length > 0 ? { ids } : {}),
      ...(reason ? { reason } : {}),
      ...(since ? { since: sinceOf(since) as number } : {}),
    };
    return { selection: { ids, reason, since }, filter };
  };

  router.get("/quarantine/requeue", async (req: Request, res: Response) => {
    const { selection, filter } = selectionOf(req.query as Record<string, unknown>);
    let items: ReturnType<typeof previewRequeue> = [];
    let error: string | null = null;
    try {
      items = previewRequeue(db, filter);
    } catch (err) {
      if (!(err instanceof RequeueSelectionError)) throw err;
      error = err.message.replace(
        /--id N…, --reason TEXT, --since TIME/,
        "a selection, a reason or a time",
      );
    }
    const q = deps.queues;
    const workerRunning = q
      ? await within(ingestWorkerRunning(q.ingest), 2000, "Redis").catch(() => null)
      : null;
    sendWith(req, res, "Requeue", (ctx) =>
      RequeueConfirmPage({ items, selection, csrf: ctx.csrf, workerRunning, error }),
    );
  });

  router.post("/quarantine/requeue", async (req: Request, res: Response) => {
    const q = deps.queues;
    if (!q)
      throw new PageError(
        503,
        "This process has no Redis connection: use simmeter quarantine requeue.",
      );
    const { filter } = selectionOf(req.body as Record<string, unknown>);
    let flash: Flash;
    try {
      const r = await requeue(db, q, filter, 20_000, api.now);
      logger.info(
        { requeued: r.requeued, counted: r.counted, again: r.quarantined_again },
        "console: quarantined events requeued",
      );
      flash = requeueFlash(r);
    } catch (err) {
      if (!(err instanceof RequeueSelectionError)) throw err;
      flash = { kind: "error", message: err.message };
    }
    redirectWith(res, `${CONSOLE_PREFIX}/quarantine`, flash);
  });

  router.get("/quarantine/:id", (req: Request, res: Response) => {
    const id = String(req.params.id ?? "");
    if (!/^\d{1,15}$/.test(id)) throw new PageError(404, `no quarantine row ${id}`);
    const [row] = listQuarantineRows(db, { ids: [Number(id)], limit: 1 });
    if (!row) throw new PageError(404, `no quarantine row ${id}`);
    send(req, res, `Quarantine #${id}`, QuarantineItemPage({ q: quarantineItem(row) }));
  });

  router.get("/anomalies", (req: Request, res: Response) => {
    const kind = one(req.query.kind).trim();
    const since = one(req.query.since).trim();
    const p = AnomalyParams.safeParse({
      limit: "200",
      ...(kind ? { kind } : {}),
      ...(since ? { since } : {}),
      ...(one(req.query.starting_after) ? { starting_after: one(req.query.starting_after) } : {}),
    });
    if (!p.success) throw new PageError(400, p.error.issues[0]?.message ?? "bad filter");
    const list = anomalyList(db, p.data);
    const kinds = db.$client
      .prepare("select distinct kind from anomalies order by kind")
      .pluck()
      .all() as string[];
    const sessions = [...new Set(list.data.map((a) => a.session_sid))];
    const simOf = new Map<string, string>();
    const stmt = db.$client.prepare("select sim_sid from sessions where session_sid = ?").pluck();
    for (const s of sessions) {
      const sim = stmt.get(s) as string | undefined;
      if (sim) simOf.set(s, sim);
    }
    send(req, res, "Anomalies", AnomaliesPage({ list, kind, since, kinds, simOf }));
  });

  // ---- unmapped SIMs and assignments -----------------------------------------------------

  router.get("/unmapped", (req: Request, res: Response) => {
    const p = UnmappedParams.parse({
      limit: 1000,
      ...(one(req.query.starting_after) ? { starting_after: one(req.query.starting_after) } : {}),
    });
    send(
      req,
      res,
      "Unmapped SIMs",
      UnmappedPage({ list: unmappedList(db, p), customers: assignmentCustomers(db).sort() }),
    );
  });

  const unmappedTotal = () => unmappedUsage(db).reduce((n, u) => n + u.bytes, 0);

  /** The unmapped total with the assignment in place, inside a transaction rolled back. */
  const unmappedIf = (input: AssignInput, now: number): number => {
    const rollback = new Error("preview");
    let after = 0;
    try {
      db.transaction(() => {
        assign(db, input, now, true);
        after = unmappedTotal();
        throw rollback;
      });
    } catch (err) {
      if (err !== rollback) throw err;
    }
    return after;
  };

  const assignmentOf = (
    src: Record<string, unknown>,
    now: number,
  ): AssignConfirmData & { input: AssignInput | null } => {
    const t = one(src.target_type);
    const targetType = t === "iccid" || t === "fleet" ? t : "sim";
    const targetId = one(src.target_id).trim();
    const customer = one(src.customer).trim();
    const from = one(src.from).trim();
    const base = {
      targetType,
      targetId,
      customer,
      from,
      effectiveHour: null,
      moves: [],
      unmappedBytes: 0,
    } as const;
    let effectiveFrom: number | undefined;
    if (from) {
      try {
        effectiveFrom = parseUtcTime(from, "from");
      } catch (err) {
        return { ...base, moves: [], problem: (err as Error).message, input: null };
      }
    }
    const input: AssignInput = {
      targetType,
      targetId,
      customerId: customer,
      ...(effectiveFrom !== undefined ? { effectiveFrom } : {}),
    };
    const problem = validateAssignment(input);
    if (problem) return { ...base, moves: [], problem, input: null };
    return {
      ...base,
      moves: [],
      effectiveHour: new Date(effectiveHour(effectiveFrom ?? now)).toISOString(),
      problem: null,
      input,
    };
  };

  router.get("/assign", (req: Request, res: Response) => {
    const now = api.now();
    const d = assignmentOf(req.query as Record<string, unknown>, now);
    if (d.input) {
      const before = unmappedTotal();
      d.unmappedBytes = Math.max(0, before - unmappedIf(d.input, now));
      try {
        d.moves = previewMoves(db, [d.input], now);
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        d.problem = err.message;
      }
    }
    sendWith(
      req,
      res,
      "Assign",
      (ctx) => AssignConfirmPage({ d, csrf: ctx.csrf }),
      d.problem ? 400 : 200,
    );
  });

  router.post("/assign", (req: Request, res: Response) => {
    const now = api.now();
    const body = req.body as Record<string, unknown>;
    const d = assignmentOf(body, now);
    if (!d.input) {
      sendWith(req, res, "Assign", (ctx) => AssignConfirmPage({ d, csrf: ctx.csrf }), 400);
      return;
    }
    const rebill = one(body.rebill) === "1";
    const before = unmappedTotal();
    try {
      const a = assign(db, d.input, now, rebill);
      const billed = Math.max(0, before - unmappedTotal());
      logger.info(
        {
          target: `${a.targetType}:${a.targetId}`,
          customer: a.customerId,
          rebill,
          unmappedBilled: billed,
        },
        "console: customer assigned",
      );
      const to =
        a.targetType === "sim"
          ? `${CONSOLE_PREFIX}/sims/${a.targetId}`
          : `${CONSOLE_PREFIX}/customers/${a.customerId}`;
      redirectWith(res, to, {
        kind: "ok",
        message: `Assigned ${a.targetType} ${a.targetId} to ${a.customerId} from ${new Date(a.effectiveFrom).toISOString()}.`,
        details: [
          `${billed.toLocaleString("en-US")} bytes of unmapped usage are now billed to ${a.customerId}; the reporter sends them on its next run.`,
          ...(rebill
            ? [
                "Re-billed: the reporter sends the old customer a negative correction and the new one the bytes.",
              ]
            : []),
        ],
      });
    } catch (err) {
      if (err instanceof RebillRequired) {
        d.moves = err.moves;
        sendWith(req, res, "Assign", (ctx) => AssignConfirmPage({ d, csrf: ctx.csrf }), 409);
        return;
      }
      if (err instanceof InputError) {
        d.problem = err.message;
        sendWith(req, res, "Assign", (ctx) => AssignConfirmPage({ d, csrf: ctx.csrf }), 400);
        return;
      }
      throw err;
    }
  });

  // ---- errors ----------------------------------------------------------------------------

  router.use((req: Request, res: Response) => {
    send(
      req,
      res,
      "Not found",
      MessagePage({
        title: "Not found",
        message: `No console page ${req.originalUrl}.`,
        back: CONSOLE_PREFIX,
      }),
      404,
    );
  });

  router.use(
    (
      err: Error & { code?: string; status?: number },
      req: Request,
      res: Response,
      _next: NextFunction,
    ) => {
      if (err.code === "EBADCSRFTOKEN") {
        logger.warn({ path: req.originalUrl }, "console POST refused: CSRF token missing or wrong");
        send(
          req,
          res,
          "Refused",
          MessagePage({
            title: "Refused",
            message:
              "This form could not be verified (its CSRF token is missing, wrong or from another session): nothing was changed. Go back, reload the page and try again.",
            back: CONSOLE_PREFIX,
          }),
          403,
        );
        return;
      }
      if (err instanceof PageError) {
        send(
          req,
          res,
          "Error",
          MessagePage({
            title: err.status === 404 ? "Not found" : "Cannot do that",
            message: err.message,
            back: CONSOLE_PREFIX,
          }),
          err.status,
        );
        return;
      }
      logger.error({ err, path: req.originalUrl }, "console request failed");
      send(
        req,
        res,
        "Error",
        MessagePage({
          title: "Something went wrong",
          message: `${err.message} (see the service log)`,
          back: CONSOLE_PREFIX,
        }),
        500,
      );
    },
  );

  app.use(CONSOLE_PREFIX, router);
}

function sameHost(req: Request): boolean {
  try {
    return new URL(req.get("origin") as string).host === req.get("host");
  } catch {
    return false;
  }
}

/** When the reporter last finished a run, from its queue (Redis keeps the last 100). */
async function lastRun(deps: ConsoleDeps): Promise<number | null> {
  const r = deps.queues?.report;
  if (!r) return null;
  try {
    const jobs = await within(r.getCompleted(0, 0), 2000, "Redis");
    return jobs[0]?.finishedOn ?? null;
  } catch {
    return null;
  }
}
