import type { Command } from "commander";
import { createAdminApp, type Readiness } from "../admin/app.ts";
import { listenAdmin } from "../admin/listener.ts";
import { redactedConfig } from "../config.ts";
import { consoleQueues } from "../console/connection.ts";
import { mountConsoleLazily } from "../console/lazy.ts";
import { createMetrics } from "../lib/metrics.ts";
import { type Closer, closeAll, onSignals } from "../lib/shutdown.ts";
import { VERSION } from "../lib/version.ts";
import { createStripe } from "../reporting/stripe.ts";
import { startServer } from "../runtime/server.ts";
import type { MetricFamilies } from "../runtime/thread-protocol.ts";
import { reporterSettings, startWorker } from "../runtime/worker.ts";
import { mergeMetrics, startWorkerThread, type WorkerThread } from "../runtime/worker-host.ts";
import { cliLedger } from "./context.ts";

type Role = "start" | "serve" | "work";

/**
 * `serve` and `work` run their role on this thread. `start` runs the receiver here and the worker
 * role in a worker thread of this process (src/runtime/worker-host.ts explains why), so the
 * worker's synchronous SQLite transactions (ingest jobs, planning chunks) never delay an ack.
 */
async function run(role: Role): Promise<void> {
  const { config, logger, opened } = await cliLedger({
    receiver: role !== "work",
    admin: true,
    role,
  });
  const { ledger } = opened;
  logger.info(
    {
      version: VERSION,
      role,
      node: process.version,
      config: redactedConfig(config),
    },
    "simmeter starting",
  );
  if (config.ALLOW_UNSIGNED && role !== "work") {
    logger.warn(
      { ALLOW_UNSIGNED: true },
      "ALLOW_UNSIGNED=true: the webhook accepts UNSIGNED deliveries from anyone who can reach it, and bills them. For local development only: set TWILIO_AUTH_TOKEN or KORE_WEBHOOK_SECRET in production.",
    );
  }
  const metrics = createMetrics(role === "work" ? "worker" : "receiver");
  // Closed in this order: the role's parts (HTTP first), the worker thread, then SQLite.
  const closers: Closer[] = [];
  let threadCloser: Closer | null = null;
  let adminCloser: Closer | null = null;
  const ledgerCloser: Closer = { name: ledger.dialect, close: () => ledger.admin.close() };
  // One deadline for the whole shutdown, however it starts; the thread gets what is left of it.
  let deadline = 0;
  let stopping = false;
  let started = false;
  const shutdown = async (exitCode: (clean: boolean) => number): Promise<never> => {
    stopping = true;
    deadline = Date.now() + config.SHUTDOWN_TIMEOUT_MS;
    // The admin listener closes after the role's parts: /readyz answers during the drain.
    const all = [
      ...closers,
      ...(threadCloser ? [threadCloser] : []),
      ...(adminCloser ? [adminCloser] : []),
      ledgerCloser,
    ];
    const clean = await closeAll(all, config.SHUTDOWN_TIMEOUT_MS, logger);
    logger.flush();
    process.exit(exitCode(clean));
  };
  // Also during start-up (the worker thread may wait for Redis): closes what runs so far.
  onSignals((signal) => {
    if (stopping) return;
    logger.info({ signal }, "shutting down");
    void shutdown((clean) => (clean ? 0 : 1));
  });
  // The admin listener comes up first, so /healthz answers and /readyz says "starting" while the
  // role waits for Redis.
  let roleReady: (() => Promise<Readiness>) | null = null;
  let threadMetrics: (() => Promise<MetricFamilies>) | null = null;
  try {
    // The operator API and the console (/console) read the same views, through the ledger's
    // port on either backend; the console also acts (requeue, retry, assign) and shows the
    // queues, on a Redis connection of its own.
    const api = {
      ledger,
      now: Date.now,
      planSettings: reporterSettings(config),
      ...(config.STRIPE_SECRET_KEY
        ? {
            stripe: { client: createStripe(config), eventName: config.STRIPE_METER_EVENT_NAME },
          }
        : {}),
    };
    const consoleParts = consoleQueues(config, logger);
    const admin = await listenAdmin(
      createAdminApp({
        logger,
        token: config.ADMIN_TOKEN,
        metrics: {
          contentType: metrics.registry.contentType,
          metrics: async () => {
            if (!threadMetrics) return metrics.registry.metrics();
            const [own, thread] = await Promise.all([
              metrics.registry.getMetricsAsJSON(),
              threadMetrics(),
            ]);
            return mergeMetrics(own, thread).metrics();
          },
        },
        ready: async () =>
          roleReady ? roleReady() : { ok: false, checks: { [role]: "starting" } },
        api,
        mount: (app) =>
          mountConsoleLazily(app, {
            api,
            token: config.ADMIN_TOKEN,
            logger,
            queues: consoleParts.queues,
          }),
      }),
      config,
      logger,
    );
    adminCloser = {
      name: admin.closer.name,
      close: async () => {
        await admin.closer.close();
        await consoleParts.close();
      },
    };
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, "start-up failed");
    await shutdown(() => 1);
    return;
  }
  try {
    if (role === "start") {
      const t: WorkerThread = startWorkerThread(config, logger);
      threadCloser = { name: "worker-thread", close: () => t.stop(deadline - Date.now()) };
      t.onUnexpectedExit(({ exitCode, error }) => {
        // During start-up the rejected `ready` reports it (below).
        if (stopping || !started) return;
        // From now on deliveries are answered 503: nothing in this process would count them.
        logger.fatal(
          { exitCode, err: error?.message, stack: error?.stack },
          "worker thread stopped: ingest and reporting are down; stopping the process so its supervisor restarts it",
        );
        void shutdown(() => 1);
      });
      // The receiver listens while the thread starts: deliveries wait in Redis meanwhile, as
      // with `serve` beside a `work` that is starting.
      threadMetrics = () => t.metrics();
      const server = await startServer(config, ledger, logger, metrics, {
        refuseReason: () => (t.alive() ? null : "worker thread stopped"),
      });
      closers.push(...server.closers);
      await t.ready;
      roleReady = server.ready;
    } else if (role === "serve") {
      const server = await startServer(config, ledger, logger, metrics);
      closers.push(...server.closers);
      roleReady = server.ready;
    } else {
      const worker = await startWorker(config, opened, logger, metrics);
      closers.push(...worker.closers);
      roleReady = worker.ready;
    }
    started = true;
  } catch (err) {
    if (stopping) return;
    logger.fatal({ err: (err as Error).message }, "start-up failed");
    await shutdown(() => 1);
  }
}

export function registerRunCommands(program: Command): void {
  program
    .command("start")
    .description(
      "run the webhook receiver and, in a worker thread, the ingest worker and reporter (what npm start runs)",
    )
    .action(() => run("start"));
  program
    .command("serve")
    .description("run only the webhook receiver (HTTP → Redis)")
    .action(() => run("serve"));
  program
    .command("work")
    .description("run only the ingest worker (Redis → SQLite); the single database writer")
    .action(() => run("work"));
}
