// What every group of console routes shares: the page sender (the page shell, the CSRF token and
// the flash message), query-value readers, the error a handler throws to show a message page, and
// the look-ups more than one page makes.
import type express from "express";
import type { Request, Response } from "express";
import type { ComponentChildren } from "preact";
import type { ApiContext } from "../../api/routes.ts";
import type { CustomerBilling } from "../../billing/periods.ts";
import type { Logger } from "../../lib/logger.ts";
import { putFlash, takeFlash } from "../actions.ts";
import { CONSOLE_PREFIX, consoleAuth, isHttps } from "../auth.ts";
import type { CsrfGuard } from "../csrf.ts";
import { type ConsoleDeps, within } from "../deps.ts";
import { type Flash, type PageContext, renderPage } from "../layout.tsx";

/** Thrown by a handler: the error handler shows `message` as a page with this status. */
export class PageError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A query or form value: the first string given, else "". */
export const one = (v: unknown): string =>
  typeof v === "string" ? v : Array.isArray(v) && typeof v[0] === "string" ? v[0] : "";

/** A repeated query or form value: every string given. */
export const many = (v: unknown): string[] =>
  typeof v === "string"
    ? [v]
    : Array.isArray(v)
      ? v.filter((x): x is string => typeof x === "string")
      : [];

/** `{ starting_after }` when the query names a cursor, else nothing (a list's first page). */
export const cursorOf = (req: Request): { starting_after?: string } =>
  one(req.query.starting_after) ? { starting_after: one(req.query.starting_after) } : {};

/** The browser's Origin names this host. */
export function sameHost(req: Request): boolean {
  try {
    return new URL(req.get("origin") as string).host === req.get("host");
  } catch {
    return false;
  }
}

/** When the reporter last finished a run, from its queue (Redis keeps the last 100). */
export async function lastRun(deps: ConsoleDeps): Promise<number | null> {
  const r = deps.queues?.report;
  if (!r) return null;
  try {
    const jobs = await within(r.getCompleted(0, 0), 2000, "Redis");
    return jobs[0]?.finishedOn ?? null;
  } catch {
    return null;
  }
}

export type Kit = {
  router: express.Router;
  deps: ConsoleDeps;
  api: ApiContext;
  logger: Logger;
  /** the console's cookies: HttpOnly, SameSite=Strict, Secure over HTTPS, path /console */
  cookieOptions: (req: Request) => {
    httpOnly: true;
    sameSite: "strict";
    secure: boolean;
    path: string;
  };
  /** the subscription periods as the reporter last stored them */
  stored: () => Promise<ReadonlyMap<string, CustomerBilling>>;
  /** Renders a page (the body may read the page context, e.g. its CSRF token) and sends it. */
  send: (
    req: Request,
    res: Response,
    title: string,
    body: ComponentChildren | ((ctx: PageContext) => ComponentChildren),
    status?: number,
  ) => void;
  /** 303 to `to`, which shows the flash message once. */
  redirectWith: (res: Response, to: string, flash: Flash) => void;
};

export function createKit(router: express.Router, deps: ConsoleDeps, csrf: CsrfGuard): Kit {
  const { api, logger } = deps;
  const cookieOptions = (req: Request) => ({
    httpOnly: true as const,
    sameSite: "strict" as const,
    secure: isHttps(req),
    path: CONSOLE_PREFIX,
  });
  const context = (req: Request, res: Response): PageContext => ({
    csrf: csrf.generate(req, res, cookieOptions(req)),
    auth: consoleAuth(req),
    reporting: Boolean(api.stripe),
    path: req.originalUrl.split("?")[0] ?? "",
    flash: takeFlash(req.query.flash),
    now: api.now(),
  });
  return {
    router,
    deps,
    api,
    logger,
    cookieOptions,
    stored: () => api.ledger.billing.load(),
    send: (req, res, title, body, status = 200) => {
      const ctx = context(req, res);
      res
        .status(status)
        .type("text/html; charset=utf-8")
        .send(renderPage(ctx, title, typeof body === "function" ? body(ctx) : body));
    },
    redirectWith: (res, to, flash) => {
      const id = putFlash(flash);
      res.redirect(303, `${to}${to.includes("?") ? "&" : "?"}flash=${id}`);
    },
  };
}
