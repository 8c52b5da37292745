// GET /console: the current billing periods' figures, the queue and the last report run.
import type { Request, Response } from "express";
import { overviewView } from "../../views/overview.ts";
import { parityRows } from "../../views/parity.ts";
import { IngestLagParams, ingestLag, UsageSeriesParams, usageSeries } from "../../views/series.ts";
import { periodsNow, within } from "../deps.ts";
import { OverviewPage } from "../pages/overview.tsx";
import { type Kit, lastRun } from "./kit.ts";

export function overviewRoutes({ router, deps, api, send }: Kit): void {
  router.get("/", async (req: Request, res: Response) => {
    const now = api.now();
    const periods = await periodsNow(deps);
    const overview = await overviewView(api.ledger, {
      now,
      settings: api.planSettings,
      billing: periods.billing,
    });
    let parity = null;
    let stripeError = periods.error;
    if (api.stripe && periods.source === "stripe") {
      try {
        parity = await parityRows(api.ledger, api.stripe.client, periods.billing, "current");
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
          usage: await usageSeries(api.ledger, UsageSeriesParams.parse({}), now),
          lag: await ingestLag(api.ledger, IngestLagParams.parse({}), now),
          depth,
          lastRunAt: await lastRun(deps),
        },
      }),
    );
  });
}
