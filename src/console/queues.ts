// bull-board at /console/queues for the ingest and report queues, behind the console's auth. Its
// UI calls its own JSON API with fetch (PUT/PATCH/POST) and cannot carry the console's CSRF token,
// so instead: every state-changing call must come from this origin (Origin, else Sec-Fetch-Site:
// same-origin; a script with the bearer token needs neither), and only the operations that lose
// nothing are allowed — retry, promote, pause/resume, run a job scheduler now. Adding or editing
// jobs (an ingest job is a delivery: that would bill events no signature vouched for), cleaning,
// emptying or obliterating a queue (failed ingest jobs hold counted-to-be events) are refused.
// docs/adr/0010-operator-console.md.
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";
import type { NextFunction, Request, Response, Router } from "express";
import { consoleAuth } from "./auth.ts";
import type { ConsoleDeps } from "./deps.ts";

export const QUEUES_PATH = "/console/queues";

const ALLOWED: RegExp[] = [
  /^\/api\/queues\/(pause|resume)$/,
  /^\/api\/queues\/[^/]+\/(pause|resume|promote)$/,
  /^\/api\/queues\/[^/]+\/retry\/(failed|completed)$/,
  /^\/api\/queues\/[^/]+\/[^/]+\/(retry|promote)$/,
  /^\/api\/queues\/[^/]+\/job-schedulers\/[^/]+\/run$/,
];

/** Whether a state-changing request comes from a page of this very origin. */
export function sameOrigin(req: Request): boolean {
  const origin = req.get("origin");
  if (origin !== undefined) {
    try {
      return origin !== "null" && new URL(origin).host === req.get("host");
    } catch {
      return false;
    }
  }
  const site = req.get("sec-fetch-site");
  return site === "same-origin";
}

function guard(deps: ConsoleDeps) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (req.method === "GET" || req.method === "HEAD") {
      next();
      return;
    }
    const bearer = consoleAuth(req).kind === "bearer";
    if (!bearer && !sameOrigin(req)) {
      deps.logger.warn(
        { path: req.originalUrl, origin: req.get("origin") },
        "queue board call refused: not from this origin",
      );
      res
        .status(403)
        .json({ error: "refused: the queue board's actions must come from its own page" });
      return;
    }
    if (!ALLOWED.some((re) => re.test(req.path))) {
      deps.logger.warn(
        { path: req.originalUrl, method: req.method },
        "queue board call refused: operation not allowed",
      );
      res.status(403).json({
        error:
          "refused: simmeter allows retry, promote, pause/resume and running a scheduler from the board; adding, editing, cleaning, emptying or obliterating jobs could lose or forge deliveries (use simmeter jobs retry / quarantine requeue)",
      });
      return;
    }
    deps.logger.info({ path: req.originalUrl, method: req.method }, "queue board action");
    next();
  };
}

/** Mounts bull-board on `router` (the console's, at /console) under /queues. */
export function mountQueues(router: Router, deps: ConsoleDeps): boolean {
  const q = deps.queues;
  if (!q) return false;
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(QUEUES_PATH);
  createBullBoard({
    queues: [
      new BullMQAdapter(q.ingest, {
        description: "webhook deliveries waiting to be counted (one job = a group of deliveries)",
        allowRetries: true,
      }),
      ...(q.report
        ? [
            new BullMQAdapter(q.report, {
              description:
                "report runs (the reporter's schedule, and runs asked for from the console)",
              allowRetries: true,
            }),
          ]
        : []),
    ],
    serverAdapter,
    options: {
      uiConfig: {
        boardTitle: "simmeter queues",
        miscLinks: [{ text: "← Console", url: "/console" }],
        hideDocsLink: true,
      },
    },
  });
  router.use("/queues", guard(deps), serverAdapter.getRouter());
  return true;
}
