import type { Command } from "commander";
import { createMetrics } from "../lib/metrics.ts";
import { type Closer, closeAll, onSignals } from "../lib/shutdown.ts";
import { startServer } from "../runtime/server.ts";
import { startWorker } from "../runtime/worker.ts";
import { cliContext } from "./context.ts";

type Role = "start" | "serve" | "work";

async function run(role: Role): Promise<void> {
  const ctx = cliContext({ receiver: role !== "work" });
  const { config, logger, db } = ctx;
  const metrics = createMetrics();
  const closers: Closer[] = [];
  try {
    if (role !== "work") closers.push(...(await startServer(config, db, logger, metrics)).closers);
    if (role !== "serve") closers.push(...(await startWorker(config, db, logger, metrics)).closers);
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, "start-up failed");
    await closeAll(closers, config.SHUTDOWN_TIMEOUT_MS, logger);
    process.exit(1);
  }
  closers.push({ name: "sqlite", close: () => void db.$client.close() });
  onSignals(async (signal) => {
    logger.info({ signal }, "shutting down");
    const clean = await closeAll(closers, config.SHUTDOWN_TIMEOUT_MS, logger);
    logger.flush();
    process.exit(clean ? 0 : 1);
  });
}

export function registerRunCommands(program: Command): void {
  program
    .command("start")
    .description(
      "run the webhook receiver and the ingest worker in one process (what npm start runs)",
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
