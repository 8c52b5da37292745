import { existsSync } from "node:fs";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { createIngestQueue } from "../ingest/queue.ts";
import { replayFile } from "../ingest/replay.ts";
import { createMetrics } from "../lib/metrics.ts";
import { createRedis, waitReady } from "../lib/redis.ts";
import { type Closer, closeAll } from "../lib/shutdown.ts";
import { startWorker } from "../runtime/worker.ts";
import { cliContext } from "./context.ts";

export function registerReplayCommand(program: Command): void {
  program
    .command("replay")
    .description(
      "push CloudEvents from FILE (JSON array or JSON lines) through the ingest queue and worker",
    )
    .argument("<file>", "events file")
    .option("--events-per-job <n>", "events per queue job", "1000")
    .action(async (file: string, o: { eventsPerJob: string }) => {
      if (!existsSync(file)) throw new Error(`${file}: no such file`);
      const { config, logger, db } = cliContext({}, "warn");
      const producer = createRedis(config.REDIS_URL, "worker", logger);
      const events = createRedis(config.REDIS_URL, "worker", logger);
      await waitReady(producer, 5000).catch((err: Error) => {
        throw new Error(
          `${err.message}: is redis-server running at REDIS_URL=${config.REDIS_URL}?`,
        );
      });
      const queue = createIngestQueue(producer, config.REDIS_PREFIX);
      const closers: Closer[] = [];
      const workers = await queue.getWorkers();
      if (workers.length === 0) {
        process.stderr.write("no ingest worker is running; processing in this process\n");
        closers.push(...(await startWorker(config, db, logger, createMetrics())).closers);
      }
      const tty = process.stderr.isTTY;
      const bar = new SingleBar({
        format:
          "replay [{bar}] {percentage}% | read {value}/{total} MB | {enqueued} queued | {processed} counted or skipped | {rate} ev/s",
        hideCursor: true,
        stream: process.stderr,
        noTTYOutput: !tty,
        notTTYSchedule: 2000,
      });
      const started = Date.now();
      const mb = (b: number) => Math.round(b / 1e5) / 10;
      bar.start(1, 0, { enqueued: 0, processed: 0, rate: 0 });
      try {
        const result = await replayFile({
          queue,
          eventsConnection: events,
          prefix: config.REDIS_PREFIX,
          path: file,
          eventsPerJob: Number(o.eventsPerJob),
          onProgress: (p) => {
            const secs = Math.max(0.001, (Date.now() - started) / 1000);
            bar.setTotal(mb(p.bytesTotal) || 1);
            bar.update(mb(p.bytesRead), {
              enqueued: p.enqueued,
              processed: p.processed,
              rate: Math.round(p.processed / secs),
            });
          },
        });
        bar.stop();
        const secs = (Date.now() - started) / 1000;
        const summary = {
          events: result.enqueued,
          counted: result.counted,
          duplicates: result.duplicates,
          quarantined: result.quarantined,
          seconds: Math.round(secs * 10) / 10,
          eventsPerSecond: Math.round(result.enqueued / Math.max(secs, 0.001)),
        };
        process.stdout.write(`${JSON.stringify(summary)}\n`);
        if (result.quarantined > 0)
          process.stderr.write("some events were quarantined: see simmeter quarantine\n");
      } finally {
        bar.stop();
        await queue.close();
        closers.push({
          name: "redis",
          close: () => {
            producer.disconnect();
            events.disconnect();
          },
        });
        await closeAll(closers, config.SHUTDOWN_TIMEOUT_MS, logger);
        db.$client.close();
      }
    });
}
