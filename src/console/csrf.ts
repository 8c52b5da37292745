// CSRF protection for the console's forms: csrf-csrf's double-submit tokens, HMAC-bound to the
// session id (with ADMIN_TOKEN) or to the per-browser id (without), so a token read from one
// browser is useless in another and a cookie planted by a sibling origin (another port of
// 127.0.0.1) cannot be paired with a token the attacker made up.
import { createHmac, randomBytes } from "node:crypto";
import { doubleCsrf } from "csrf-csrf";
import type { CookieOptions, NextFunction, Request, Response } from "express";
import { CSRF_COOKIE, consoleAuth } from "./auth.ts";

export type CsrfGuard = {
  /** the token for this request's forms (sets or reuses the CSRF cookie) */
  generate: (req: Request, res: Response, cookie: CookieOptions) => string;
  /** refuses a POST without a valid token (error code EBADCSRFTOKEN, status 403) */
  protect: (req: Request, res: Response, next: NextFunction) => void;
};

/** Scripts with the bearer token are not browsers: nothing can make them send it cross-site. */
const sessionOf = (req: Request): string => {
  const a = consoleAuth(req);
  if (a.kind === "session") return `s:${a.id}`;
  if (a.kind === "open") return `b:${a.id}`;
  return a.kind;
};

export function csrfSync(token: string | undefined): CsrfGuard {
  // Derived from ADMIN_TOKEN, so tokens outlive a restart; without one, per process.
  const secret = token
    ? createHmac("sha256", token).update("simmeter-console-csrf").digest("hex")
    : randomBytes(32).toString("hex");
  const { generateCsrfToken, doubleCsrfProtection } = doubleCsrf({
    getSecret: () => secret,
    getSessionIdentifier: sessionOf,
    cookieName: CSRF_COOKIE,
    cookieOptions: { sameSite: "strict", path: "/console", secure: false, httpOnly: true },
    getCsrfTokenFromRequest: (req) => {
      const v = (req.body as Record<string, unknown> | undefined)?._csrf;
      return typeof v === "string" ? v : (req.get("x-csrf-token") ?? null);
    },
    skipCsrfProtection: (req) => consoleAuth(req).kind === "bearer",
  });
  return {
    generate: (req, res, cookie) => generateCsrfToken(req, res, { cookieOptions: cookie }),
    protect: doubleCsrfProtection,
  };
}
