// The operator console: server-rendered pages under /console on the admin listener, each figure
// read from the same view (src/views/) the CLI's --json and /api print. Auth is the admin app's
// (src/admin/app.ts: the bearer token, or this console's session cookie); every POST needs a
// csrf-csrf token bound to the session (or, without ADMIN_TOKEN, to a per-browser cookie).
// docs/console.md describes the pages; docs/adr/0010-operator-console.md the choices.
//
// This file puts the pieces together in the order they must run; the routes of each page group
// are in routes/ (their shared helpers in routes/kit.ts), the pages in pages/.
import express, { type NextFunction, type Request, type Response } from "express";
import { CONSOLE_PREFIX } from "./auth.ts";
import { csrfSync } from "./csrf.ts";
import type { ConsoleDeps } from "./deps.ts";
import { MessagePage } from "./pages/messages.tsx";
import { mountQueues } from "./queues.ts";
import { assetRoutes } from "./routes/assets.ts";
import { billingRoutes } from "./routes/billing.ts";
import { customerRoutes } from "./routes/customers.ts";
import { createKit, type Kit, PageError } from "./routes/kit.ts";
import { overviewRoutes } from "./routes/overview.ts";
import { quarantineRoutes } from "./routes/quarantine.ts";
import { openAccess, sessionRoutes } from "./routes/session.ts";
import { unmappedRoutes } from "./routes/unmapped.ts";

export type { ConsoleDeps } from "./deps.ts";
export { consoleQueues } from "./deps.ts";

const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function mountConsole(app: express.Express, deps: ConsoleDeps): void {
  const router = express.Router();
  const csrf = csrfSync(deps.token);
  const kit = createKit(router, deps, csrf);

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

  assetRoutes(router);
  if (!deps.token) openAccess(kit);

  const hasBoard = mountQueues(router, deps);
  if (!hasBoard)
    router.use("/queues", (req: Request, res: Response) => {
      kit.send(
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

  sessionRoutes(kit, csrf);
  overviewRoutes(kit);
  customerRoutes(kit);
  billingRoutes(kit);
  quarantineRoutes(kit);
  unmappedRoutes(kit);
  errorRoutes(kit);

  app.use(CONSOLE_PREFIX, router);
}

/** Last: no such page (404), and every error a handler threw, as a message page. */
function errorRoutes({ router, logger, send }: Kit): void {
  const message = (
    req: Request,
    res: Response,
    title: string,
    heading: string,
    text: string,
    status: number,
  ) =>
    send(
      req,
      res,
      title,
      MessagePage({ title: heading, message: text, back: CONSOLE_PREFIX }),
      status,
    );

  router.use((req: Request, res: Response) => {
    message(req, res, "Not found", "Not found", `No console page ${req.originalUrl}.`, 404);
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
        message(
          req,
          res,
          "Refused",
          "Refused",
          "This form could not be verified (its CSRF token is missing, wrong or from another session): nothing was changed. Go back, reload the page and try again.",
          403,
        );
        return;
      }
      if (err instanceof PageError) {
        const heading = err.status === 404 ? "Not found" : "Cannot do that";
        message(req, res, "Error", heading, err.message, err.status);
        return;
      }
      logger.error({ err, path: req.originalUrl }, "console request failed");
      message(
        req,
        res,
        "Error",
        "Something went wrong",
        `${err.message} (see the service log)`,
        500,
      );
    },
  );
}
