// Billing sync: the outbox and what the next report pass would hold; retrying stopped rows.
import type { Request, Response } from "express";
import { OutboxRowParams, outboxRowList } from "../../views/outbox.ts";
import { lastSentAt } from "../../views/overview.ts";
import { reportStatusView } from "../../views/report.ts";
import { retryFlash, retryStopped } from "../actions.ts";
import { CONSOLE_PREFIX } from "../auth.ts";
import { periodsNow } from "../deps.ts";
import { BillingPage, RetryConfirmPage } from "../pages/billing.tsx";
import { type Kit, lastRun } from "./kit.ts";

export function billingRoutes({ router, deps, api, logger, send, redirectWith }: Kit): void {
  const rows = (q: Record<string, unknown>) =>
    outboxRowList(api.ledger, OutboxRowParams.parse({ limit: 100, ...q }));

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
          status: await reportStatusView(api.ledger, {
            now,
            settings: api.planSettings,
            billing: periods.billing,
          }),
          stopped: await rows({ state: "failed" }),
          pending: await rows({ state: "pending" }),
          late: await rows({ late: "true" }),
          lastSentAt: await lastSentAt(api.ledger),
          lastRunAt: await lastRun(deps),
          reporting: Boolean(api.stripe),
          reporterHere: Boolean(deps.queues?.report),
          periodsSource: periods.source,
        },
      }),
    );
  });

  router.get("/billing/retry", async (req: Request, res: Response) => {
    const stopped = await rows({ state: "failed", limit: 1000 });
    send(req, res, "Retry stopped rows", (ctx) =>
      RetryConfirmPage({
        stopped,
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
}
