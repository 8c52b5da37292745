import express, { type Request, type Response } from "express";
import type { Config } from "../config.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { type ReceiveDeps, receiveDelivery } from "./receive.ts";

export type AppDeps = ReceiveDeps & {
  config: Pick<Config, "BODY_LIMIT_BYTES"> & ReceiveDeps["config"];
  logger: Logger;
  metrics: Metrics;
};

export const WEBHOOK_PATH = "/webhooks/event-streams";

/**
 * The webhook listener: POST /webhooks/event-streams and nothing else. Health, metrics and the
 * operator API are on the admin listener (src/admin/app.ts), which is loopback or token-guarded.
 */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  app.post(
    WEBHOOK_PATH,
    // Any content type: the exact header Event Streams sends is unconfirmed, and the signature
    // covers raw bytes, so the body must reach us unparsed.
    express.raw({ type: () => true, limit: deps.config.BODY_LIMIT_BYTES }),
    async (req: Request, res: Response) => {
      const rawBody = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const outcome = await receiveDelivery(
        { method: req.method, requestTarget: req.originalUrl, headers: req.headers, rawBody },
        deps,
      );
      switch (outcome.kind) {
        case "accepted":
          deps.metrics.deliveries.inc({
            outcome: outcome.unparsable ? "quarantined" : "accepted",
            source: outcome.source,
          });
          for (const t of outcome.types) deps.metrics.receivedEvents.inc({ type: t });
          if (outcome.testIds.length > 0)
            deps.logger.info({ testIds: outcome.testIds }, "Event Streams test event received");
          if (outcome.unparsable)
            deps.logger.warn(
              { deliveryId: outcome.deliveryId },
              "authenticated delivery is not valid JSON; quarantined",
            );
          res.status(200).json({ accepted: outcome.events, deliveryId: outcome.deliveryId });
          return;
        case "test":
          deps.metrics.deliveries.inc({ outcome: "test", source: outcome.source });
          deps.metrics.receivedEvents.inc({ type: "test" }, outcome.testIds.length);
          deps.logger.info(
            { testIds: outcome.testIds },
            "Event Streams test event received (not billed)",
          );
          res.status(200).json({ test: true, testIds: outcome.testIds });
          return;
        case "unauthenticated":
          deps.metrics.deliveries.inc({ outcome: "unauthenticated", source: outcome.source });
          deps.logger.warn(
            { reason: outcome.reason, ip: req.ip },
            "delivery rejected: unauthenticated",
          );
          res
            .status(401)
            .set("WWW-Authenticate", 'Basic realm="simmeter"')
            .json({ error: outcome.reason });
          return;
        case "forbidden":
          deps.metrics.deliveries.inc({ outcome: "forbidden", source: outcome.source });
          // Every rejected signature may be a lost event (senders never retry a 4xx): log loudly.
          deps.logger.error(
            { reason: outcome.reason, ip: req.ip },
            "delivery rejected: bad signature",
          );
          res.status(403).json({ error: outcome.reason });
          return;
        case "unavailable":
          deps.metrics.deliveries.inc({ outcome: "unavailable", source: outcome.source });
          deps.logger.error(
            { reason: outcome.reason },
            "delivery not queued: Redis unavailable; answering 503 so the sender retries",
          );
          res.status(503).set("Retry-After", "5").json({ error: "queue unavailable, retry later" });
          return;
        default: {
          const never: never = outcome;
          throw new Error(`unhandled outcome ${JSON.stringify(never)}`);
        }
      }
    },
  );

  app.use((req: Request, res: Response) => {
    res.status(404).json({
      error: `no route ${req.method} ${req.path}: this listener only takes POST ${WEBHOOK_PATH}`,
    });
  });

  // Body-parser errors (too large, aborted) keep their 4xx status; anything else is ours: 500.
  app.use(
    (
      err: Error & { status?: number; type?: string },
      _req: Request,
      res: Response,
      _next: express.NextFunction,
    ) => {
      const status = err.status && err.status >= 400 && err.status < 500 ? err.status : 500;
      if (status >= 500) deps.logger.error({ err }, "request failed");
      else deps.logger.warn({ err: err.message, type: err.type }, "request refused");
      res.status(status).json({
        error:
          status === 413 ? `body larger than ${deps.config.BODY_LIMIT_BYTES} bytes` : err.message,
      });
    },
  );
  return app;
}
