// Entry of `simmeter start`'s worker thread: runs the worker role (startWorker: ingest worker,
// reporter, prune) with its own SQLite connection, Redis connections and metrics registry, so its
// synchronous SQLite transactions never hold the receiver's event loop. Started by worker-host.ts;
// importing this module anywhere else does nothing.
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { isMainThread, type MessagePort, parentPort, workerData } from "node:worker_threads";
import pino from "pino";
import { type OpenedLedger, openLedger } from "../ledger/open.ts";
import { createLogger, type Logger } from "../lib/logger.ts";
import { createMetrics } from "../lib/metrics.ts";
import { type Closer, closeAll } from "../lib/shutdown.ts";
import {
  type FromThread,
  type ToThread,
  WORKER_THREAD_KIND,
  type WorkerThreadData,
} from "./thread-protocol.ts";
import { startWorker } from "./worker.ts";

/**
 * The worker thread's nice value (Linux). A thread of its own keeps the worker's synchronous
 * SQLite work off the receiver's event loop, but not off the receiver's CPU: on a small machine a
 * long planning pass or an ingest backlog keeps a core busy, and the receiver then waits for CPU
 * instead. Acks are the latency-bound path; the worker's work is what the queue exists to buffer,
 * so under CPU contention the worker yields (nice 10 gets about a tenth of a contended core's
 * share next to nice 0) and catches up when the CPU is free. Idle cores are used in full.
 */
export const WORKER_THREAD_NICE = 10;

/** Lowers this thread's (only this thread's) CPU priority; see WORKER_THREAD_NICE. */
function lowerPriority(logger: Logger): void {
  if (process.platform !== "linux") return;
  try {
    // "/proc/thread-self" → "<pid>/task/<tid>"; setpriority(PRIO_PROCESS, tid) on Linux changes
    // that thread alone (raising one's own nice value needs no privilege).
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (!Number.isInteger(tid) || tid <= 0 || tid === process.pid) return;
    setPriority(tid, WORKER_THREAD_NICE);
    logger.info(
      { nice: WORKER_THREAD_NICE },
      "worker thread runs at a lower CPU priority than the receiver",
    );
  } catch (err) {
    logger.warn(
      { err: (err as Error).message },
      "could not lower the worker thread's CPU priority",
    );
  }
}

function post(port: MessagePort, m: FromThread): void {
  port.postMessage(m);
}

/**
 * The thread's logger: the same pino configuration as every other (createLogger), but each line
 * goes to the main thread, which writes it to its own stream. Two threads writing fd 2 on their
 * own could interleave partial lines on a pipe (writes above PIPE_BUF are not atomic); one writer
 * keeps every line whole and in order. `pino.symbols.streamSym` is pino's public hook for that.
 */
function threadLogger(port: MessagePort, level: string): Logger {
  const logger = createLogger(level);
  (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] = {
    write: (line: string) => post(port, { type: "log", line }),
  };
  return logger.child({ thread: "worker" });
}

async function run(port: MessagePort, data: WorkerThreadData): Promise<void> {
  const { config } = data;
  const logger = threadLogger(port, config.LOG_LEVEL);
  lowerPriority(logger);
  const metrics = createMetrics("worker");
  let closers: Closer[] = [];
  // Closing the port lets the thread end once the closers released their handles.
  let shuttingDown = false;
  port.on("message", (m: ToThread) => {
    if (m.type === "metrics") {
      // All families; the host keeps what it reports (mergeMetrics in worker-host.ts).
      metrics.registry.getMetricsAsJSON().then(
        (families) => post(port, { type: "metrics", id: m.id, families }),
        (err: unknown) => {
          logger.warn({ err: (err as Error).message }, "could not collect worker metrics");
          post(port, { type: "metrics", id: m.id, families: [] });
        },
      );
    } else if (m.type === "shutdown" && !shuttingDown) {
      shuttingDown = true;
      void closeAll(closers, m.deadlineMs, logger).then((clean) => {
        post(port, { type: "closed", clean });
        port.close();
      });
    }
  });
  let opened: OpenedLedger | undefined;
  try {
    // The main thread has applied the migrations already; this is a second connection to the
    // same ledger (SQLite WAL: this thread is the only writer, the receiver reads).
    opened = await openLedger(config, { mode: "write", role: "start-worker" });
    const { ledger } = opened;
    closers = [
      ...(await startWorker(config, opened, logger, metrics)).closers,
      { name: "ledger-worker", close: () => ledger.admin.close() },
    ];
    post(port, { type: "ready" });
  } catch (err) {
    // The parts already started are closed quickly; the host exits the process.
    await closeAll(closers, Math.min(2000, config.SHUTDOWN_TIMEOUT_MS), logger);
    await opened?.ledger.admin.close().catch(() => {});
    post(port, { type: "startup-failed", error: (err as Error).message });
    port.close();
  }
}

const data = workerData as WorkerThreadData | undefined;
if (!isMainThread && parentPort && data?.kind === WORKER_THREAD_KIND) {
  await run(parentPort, data);
}
