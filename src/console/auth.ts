// Who a console request comes from. Browsers cannot send a bearer header on navigation, so with
// ADMIN_TOKEN set the console has a login form that turns the token into a session cookie: a random
// session id, its issue time and an HMAC of both keyed by the token. The token itself is never in
// the cookie, the server keeps no session table, and changing ADMIN_TOKEN ends every session.
// Without ADMIN_TOKEN (a loopback-only listener) the console is open, and each browser gets a
// random id cookie that the CSRF tokens are bound to (docs/adr/0010-operator-console.md).
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Request } from "express";

export const CONSOLE_PREFIX = "/console";
export const SESSION_COOKIE = "simmeter_session";
export const BROWSER_COOKIE = "simmeter_browser";
export const CSRF_COOKIE = "simmeter_csrf";
/** A console session lasts this long after login. */
export const SESSION_MAX_AGE_MS = 12 * 3_600_000;

export type ConsoleAuth =
  /** Authorization: Bearer <ADMIN_TOKEN> (a script; browsers never attach it by themselves) */
  | { kind: "bearer" }
  /** a session cookie from /console/login */
  | { kind: "session"; id: string }
  /** ADMIN_TOKEN unset: loopback only, no login; id is the browser cookie's */
  | { kind: "open"; id: string }
  /** not signed in: only the login page and static assets answer */
  | { kind: "anonymous" };

const auths = new WeakMap<Request, ConsoleAuth>();

export function setConsoleAuth(req: Request, auth: ConsoleAuth): void {
  auths.set(req, auth);
}

export function consoleAuth(req: Request): ConsoleAuth {
  return auths.get(req) ?? { kind: "anonymous" };
}

const VERSION = "v1";
const mac = (token: string, message: string) =>
  createHmac("sha256", token).update(`simmeter-console-session:${message}`).digest("base64url");

/** A new session cookie value and its id. */
export function issueSession(token: string, now: number): { value: string; id: string } {
  const id = randomBytes(24).toString("base64url");
  const message = `${VERSION}.${now}.${id}`;
  return { value: `${message}.${mac(token, message)}`, id };
}

/** The session id of a cookie value the token signed that has not expired, else null. */
export function verifySession(
  value: string | undefined,
  token: string,
  now: number,
): { id: string; issuedAt: number } | null {
  if (typeof value !== "string") return null;
  const parts = value.split(".");
  if (parts.length !== 4 || parts[0] !== VERSION) return null;
  const [, iat, id, sig] = parts as [string, string, string, string];
  if (!/^\d{1,16}$/.test(iat) || !/^[A-Za-z0-9_-]{16,64}$/.test(id)) return null;
  const expected = Buffer.from(mac(token, `${VERSION}.${iat}.${id}`));
  const given = Buffer.from(sig);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const issuedAt = Number(iat);
  if (issuedAt > now + 60_000 || now - issuedAt > SESSION_MAX_AGE_MS) return null;
  return { id, issuedAt };
}

/** Paths of the console that answer without a session: the login form and the static files. */
export function isPublicConsolePath(path: string): boolean {
  return path === `${CONSOLE_PREFIX}/login` || path.startsWith(`${CONSOLE_PREFIX}/assets/`);
}

export function isConsolePath(path: string): boolean {
  return path === CONSOLE_PREFIX || path.startsWith(`${CONSOLE_PREFIX}/`);
}

/** Whether the request came over TLS (directly, or through a proxy that says so). */
export function isHttps(req: Request): boolean {
  if (req.protocol === "https") return true;
  const forwarded = req.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase();
  return forwarded === "https";
}

/** The login form's `next`: a console path of this origin only (no open redirect). */
export function safeNext(v: unknown): string {
  if (typeof v !== "string") return CONSOLE_PREFIX;
  if (!isConsolePath(v.split(/[?#]/)[0] ?? "") || v.startsWith("//") || v.includes("\\"))
    return CONSOLE_PREFIX;
  if (v.startsWith(`${CONSOLE_PREFIX}/login`)) return CONSOLE_PREFIX;
  return v;
}

/** Constant-time comparison of a pasted token with ADMIN_TOKEN. */
export function tokenMatches(given: unknown, token: string): boolean {
  if (typeof given !== "string") return false;
  const a = createHmac("sha256", "simmeter-console-login").update(given.trim()).digest();
  const b = createHmac("sha256", "simmeter-console-login").update(token).digest();
  return timingSafeEqual(a, b);
}
