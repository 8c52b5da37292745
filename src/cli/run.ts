import type { Command } from "commander";
import type { Registry } from "prom-client";
import { createMetrics } from "../lib/metrics.ts";
import { type Closer, closeAll, onSignals } from "../lib/shutdown.ts";
import { startServer } from "../runtime/server.ts";
import { startWorker } from "../runtime/worker.ts";
import { mergeMetrics, startWorkerThread, type WorkerThread } from "../runtime/worker-host.ts";
import { cliContext } from "./context.ts";

type Role = "start" | "serve" | "work";

/**
 * `serve` and `work` run their role on this thread. `start` runs the receiver here and the worker
 * role in a worker thread of this process (src/runtime/worker-host.ts explains why), so the
 * worker's synchronous SQLite transactions (ingest jobs, planning chunks) never delay an ack.
 */
async function run(role: Role): Promise<void> {
  const ctx = cliContext({ receiver: role !== "work" });
  const { config, logger, db } = ctx;
  const metrics = createMetrics();
  // Closed in this order: the role's parts (HTTP first), the worker thread, then SQLite.
  const closers: Closer[] = [];
  let threadCloser: Closer | null = null;
  const sqliteCloser: Closer = { name: "sqlite", close: () => void db.$client.close() };
  // One deadline for the whole shutdown, however it starts; the thread gets what is left of it.
  let deadline = 0;
  let stopping = false;
  let started = false;
  const shutdown = async (exitCode: (clean: boolean) => number): Promise<never> => {
    stopping = true;
    deadline = Date.now() + config.SHUTDOWN_TIMEOUT_MS;
    const all = [...closers, ...(threadCloser ? [threadCloser] : []), sqliteCloser];
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
      const server = await startServer(config, db, logger, metrics, {
        refuseReason: () => (t.alive() ? null : "worker thread stopped"),
        mergedMetrics: async (local: Registry) => {
          const [own, thread] = await Promise.all([local.getMetricsAsJSON(), t.metrics()]);
          return mergeMetrics(own, thread);
        },
      });
      closers.push(...server.closers);
      await t.ready;
    } else if (role === "serve") {
      closers.push(...(await startServer(config, db, logger, metrics)).closers);
    } else {
      closers.push(...(await startWorker(config, db, logger, metrics)).closers);
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
