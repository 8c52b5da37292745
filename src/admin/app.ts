import { createHash, timingSafeEqual } from "node:crypto";
import cookieParser from "cookie-parser";
import express, { type NextFunction, type Request, type Response } from "express";
import { apiError } from "../api/error.ts";
import type { ApiContext } from "../api/routes.ts";
import { isLoopback } from "../config.ts";
import {
  CONSOLE_PREFIX,
  isConsolePath,
  isPublicConsolePath,
  SESSION_COOKIE,
  setConsoleAuth,
  verifySession,
} from "../console/auth.ts";
import type { Logger } from "../lib/logger.ts";

export type Readiness = { ok: boolean; checks: Record<string, string> };

export type AdminDeps = {
  logger: Logger;
  /**
   * when set, every request but GET /healthz needs `Authorization: Bearer <token>`; under /console
   * a session cookie from the console's login form (src/console/auth.ts) does too
   */
  token?: string | undefined;
  /** what /metrics answers (the role's registry, or the merged one of `start`) */
  metrics: { contentType: string; metrics: () => Promise<string> };
  ready: () => Promise<Readiness>;
  /** the operator API; absent in a role without the ledger */
  api?: ApiContext;
  /** more routes behind the same token (the console) */
  mount?: (app: express.Express) => void;
};

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time comparison of the presented bearer token with the configured one. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer ([\x21-\x7e]+)$/i.exec(header ?? "");
  return m?.[1] !== undefined && timingSafeEqual(digest(m[1]), digest(token));
}

/**
 * The admin listener's app: health, readiness, metrics and the operator API. It answers JSON on
 * every path, errors included; the webhook listener serves none of this.
 */
export function createAdminApp(deps: AdminDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  // Access log at debug: scrapes and probes every few seconds would drown info.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    res.on("finish", () => {
      deps.logger.debug(
        {
          method: req.method,
          path: req.path,
          status: res.statusCode,
          ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
          ip: req.ip,
        },
        "admin request",
      );
    });
    next();
  });

  // Liveness says nothing but "the process answers": a supervisor may probe it without a token.
  app.get("/healthz", (_req, res) => {
    res.json({ ok: true });
  });

  // The console's session, browser and CSRF cookies (nothing else reads cookies).
  if (deps.mount) app.use(CONSOLE_PREFIX, cookieParser());

  const token = deps.token;
  if (!token) {
    // Without a token the listener is loopback-only (loadConfig refuses otherwise), but a page in
    // the operator's browser can still reach 127.0.0.1 under a hostile name that resolves there
    // (DNS rebinding): answer only requests addressed to a loopback name.
    app.use((req: Request, res: Response, next: NextFunction) => {
      if (isLoopback(req.hostname)) {
        next();
        return;
      }
      deps.logger.warn(
        { host: req.get("host"), path: req.path },
        "admin request refused: Host is not loopback",
      );
      apiError(
        res,
        403,
        "unauthorized",
        "without ADMIN_TOKEN the admin listener answers only to localhost, 127.0.0.1 or [::1] (use an SSH tunnel, or set ADMIN_TOKEN)",
      );
    });
  }
  if (token) {
    app.use((req: Request, res: Response, next: NextFunction) => {
      if (bearerMatches(req.get("authorization"), token)) {
        setConsoleAuth(req, { kind: "bearer" });
        next();
        return;
      }
      // The console only: a browser's session cookie, or the login form and static files.
      if (deps.mount && isConsolePath(req.path)) {
        const session = verifySession(
          (req.cookies as Record<string, string> | undefined)?.[SESSION_COOKIE],
          token,
          Date.now(),
        );
        if (session) {
          setConsoleAuth(req, { kind: "session", id: session.id });
          next();
          return;
        }
        if (isPublicConsolePath(req.path)) {
          setConsoleAuth(req, { kind: "anonymous" });
          next();
          return;
        }
        deps.logger.warn(
          { path: req.path, method: req.method, ip: req.ip },
          "console request refused: not signed in",
        );
        res.set("Cache-Control", "no-store");
        if (
          (req.method === "GET" || req.method === "HEAD") &&
          req.accepts(["json", "html"]) === "html"
        ) {
          res.redirect(303, `${CONSOLE_PREFIX}/login?next=${encodeURIComponent(req.originalUrl)}`);
          return;
        }
        res.set("WWW-Authenticate", 'Bearer realm="simmeter-admin"');
        apiError(
          res,
          401,
          "unauthorized",
          "sign in at /console/login, or send Authorization: Bearer <ADMIN_TOKEN>",
        );
        return;
      }
      deps.logger.warn(
        { path: req.path, ip: req.ip },
        "admin request refused: bearer token missing or wrong",
      );
      res.set("WWW-Authenticate", 'Bearer realm="simmeter-admin"');
      apiError(res, 401, "unauthorized", "send Authorization: Bearer <ADMIN_TOKEN>");
    });
  }

  app.get("/readyz", async (_req, res) => {
    const r = await deps.ready();
    res.status(r.ok ? 200 : 503).json(r);
  });
  app.get("/metrics", async (_req, res) => {
    res.set("Content-Type", deps.metrics.contentType);
    res.send(await deps.metrics.metrics());
  });
  if (deps.api) {
    // Loaded on the first /api request: the views behind it (billing, customers, parity) cost
    // about 20 MB that a receiver or worker nobody queries should not pay.
    const api = deps.api;
    let loading: Promise<express.Router> | null = null;
    const load = () => {
      loading ??= Promise.all([import("../api/router.ts"), import("../api/openapi.ts")]).then(
        ([r, o]) => {
          const router = express.Router();
          const doc = o.openApiDocument();
          router.get("/api/openapi.json", (_req, res) => {
            res.json(doc);
          });
          router.use(r.apiRouter(api));
          return router;
        },
      );
      return loading;
    };
    app.use((req: Request, res: Response, next: NextFunction) => {
      if (!req.path.startsWith("/api/")) {
        next();
        return;
      }
      load().then(
        (router) => router(req, res, next),
        (err: unknown) => {
          loading = null;
          next(err);
        },
      );
    });
  }
  deps.mount?.(app);
  app.use((req: Request, res: Response) => {
    apiError(res, 404, "not_found", `no route ${req.method} ${req.path}`);
  });
  app.use((err: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    const status = err.status && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status >= 500) {
      deps.logger.error({ err }, "admin request failed");
      apiError(res, 500, "internal_error", "internal error (see the service log)");
    } else {
      apiError(res, status, "invalid_parameter", err.message);
    }
  });
  return app;
}
