import { existsSync } from "node:fs";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { createIngestQueue } from "../ingest/queue.ts";
import { type ReplayProgress, replayFile } from "../ingest/replay.ts";
import { type OpenedLedger, openLedger } from "../ledger/open.ts";
import { createMetrics } from "../lib/metrics.ts";
import { createRedis, waitReady } from "../lib/redis.ts";
import { type Closer, closeAll } from "../lib/shutdown.ts";
import { startWorker } from "../runtime/worker.ts";
import { snakeKeys } from "../views/json.ts";
import { cliConfig, intOption } from "./context.ts";

/**
 * Why a replay must exit 1, or null: nothing of the file is in the ledger afterwards (no event
 * counted now or before: an empty file, or every event quarantined or a test event), or, with
 * `strict`, any event was quarantined. Events already counted (duplicates) are not a problem.
 */
export function replayProblem(r: ReplayProgress, file: string, strict: boolean): string | null {
  if (r.enqueued === 0) return `nothing counted: ${file} holds no events`;
  if (r.counted === 0 && r.duplicates === 0)
    return r.quarantined > 0
      ? `nothing counted: all ${r.quarantined} event(s) of ${file} that could be billed were quarantined (see simmeter quarantine)`
      : `nothing counted: none of the ${r.enqueued} event(s) of ${file} is a billing event`;
  if (strict && r.quarantined > 0)
    return `--strict: ${r.quarantined} event(s) were quarantined (see simmeter quarantine)`;
  return null;
}

export function registerReplayCommand(program: Command): void {
  program
    .command("replay")
    .description(
      "push CloudEvents from FILE (JSON array or JSON lines) through the ingest queue and worker; exits 1 when nothing was counted",
    )
    .argument("<file>", "events file")
    .option("--events-per-job <n>", "events per queue job", intOption(1, 100_000), 1000)
    .option("--strict", "exit 1 when any event was quarantined")
    .action(async (file: string, o: { eventsPerJob: number; strict?: boolean }) => {
      if (!existsSync(file)) throw new Error(`${file}: no such file`);
      const { config, logger } = cliConfig({}, "warn");
      const producer = createRedis(config.REDIS_URL, "worker", logger);
      const events = createRedis(config.REDIS_URL, "worker", logger);
      const disconnect = () => {
        producer.disconnect();
        events.disconnect();
      };
      await waitReady(producer, 5000).catch((err: Error) => {
        disconnect();
        throw new Error(
          `${err.message}: is redis-server running at REDIS_URL=${config.REDIS_URL}?`,
        );
      });
      const queue = createIngestQueue(producer, config.REDIS_PREFIX);
      const closers: Closer[] = [];
      let opened: OpenedLedger | null = null;
      const workers = await queue.getWorkers();
      if (workers.length === 0) {
        process.stderr.write("no ingest worker is running; processing in this process\n");
        // This process is the worker now, so it may create the database, as `simmeter work` does.
        try {
          opened = await openLedger(config, { mode: "create", role: "replay" });
        } catch (err) {
          await queue.close();
          disconnect();
          throw err;
        }
        const { ledger } = opened;
        closers.push(...(await startWorker(config, opened, logger, createMetrics())).closers);
        closers.push({ name: "ledger", close: () => ledger.admin.close() });
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
          eventsPerJob: o.eventsPerJob,
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
        process.stdout.write(`${JSON.stringify(snakeKeys(summary))}\n`);
        const problem = replayProblem(result, file, Boolean(o.strict));
        if (problem) {
          process.stderr.write(`${problem}\n`);
          process.exitCode = 1;
        } else if (result.quarantined > 0)
          process.stderr.write(
            `${result.quarantined} event(s) were quarantined: see simmeter quarantine\n`,
          );
      } finally {
        bar.stop();
        await queue.close();
        closers.push({ name: "redis", close: disconnect });
        await closeAll(closers, config.SHUTDOWN_TIMEOUT_MS, logger);
      }
    });
}
