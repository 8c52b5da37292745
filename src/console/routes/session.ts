// Who may use the console: without ADMIN_TOKEN a loopback Host and a per-browser id; with it the
// login form (a session cookie) and sign-out. Every other POST must come from this origin and
// carry a CSRF token bound to the session (or the browser id).
import { randomBytes } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import { isLoopback } from "../../config.ts";
import {
  BROWSER_COOKIE,
  CONSOLE_PREFIX,
  consoleAuth,
  issueSession,
  SESSION_COOKIE,
  SESSION_MAX_AGE_MS,
  safeNext,
  setConsoleAuth,
  tokenMatches,
} from "../auth.ts";
import type { CsrfGuard } from "../csrf.ts";
import { LoginPage } from "../pages/messages.tsx";
import { type Kit, PageError, sameHost } from "./kit.ts";

/**
 * Without ADMIN_TOKEN the listener is loopback-only and the console has no login. A page of any
 * other site in the operator's browser can still send requests to 127.0.0.1: the Host check
 * stops DNS rebinding (a hostile name resolving to 127.0.0.1 is same-origin to its own page), and
 * the CSRF token, bound to this per-browser id, stops forged forms.
 */
export function openAccess({ router, logger, cookieOptions }: Kit): void {
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

/** /login and /logout, with the POST guard between them (the login form has no CSRF token). */
export function sessionRoutes(kit: Kit, csrf: CsrfGuard): void {
  const { router, deps, logger, send, cookieOptions } = kit;
  const token = deps.token;

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
    const refuse = (error: string, status: number) =>
      send(req, res, "Sign in", LoginPage({ next, error, signedIn: false }), status);
    if (req.get("origin") !== undefined && !sameHost(req)) {
      refuse("Refused: the form did not come from this console.", 403);
      return;
    }
    if (!tokenMatches((req.body as Record<string, unknown>)?.token, token)) {
      logger.warn({ ip: req.ip }, "console login refused: wrong token");
      refuse("That is not the ADMIN_TOKEN.", 401);
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
}
