// `simmeter start` runs the worker role (ingest worker, reporter, prune) in a node:worker_threads
// Worker, and the receiver on the main thread.
//
// Why: an ingest commit (up to WORKER_COMMIT_JOBS jobs) is one synchronous SQLite transaction, and
// so is every planning chunk of the reporter; on one event loop each of them delays every webhook
// ack and /healthz behind it. A thread has its own event loop (and V8 heap, GC), so the receiver
// answers while the worker writes.
//
// Why a thread and not a child process:
// - One process, as before: one PID for supervisors, and a SIGKILL (or OOM kill) of the process
//   takes the writer with it. A child process would survive its parent's SIGKILL, keep consuming
//   jobs, and meet the restarted service's new child as a second writer of the same database.
// - The host sees the thread die at once ('error'/'exit' events, with the error), with nothing to
//   reap and no IPC channel to lose; config, metrics and log lines are structured-cloned messages.
// - better-sqlite3 supports worker threads (one connection per thread); SQLite's WAL gives the
//   thread the single writer's role and lets the receiver's connection read (/readyz, /api/usage).
// The costs: the two threads share the process's memory (two V8 heaps, RSS is their sum), and a
// native crash (segfault) takes both down (so did one thread).
//
// Running from TypeScript sources (bin/simmeter.mjs without a current dist/): hooks registered with
// tsx's register() in the main thread do not apply to worker threads on Node 20, and neither does
// `--import tsx` in the Worker's execArgv (both verified on Node 20.20: "Unknown file extension
// .ts"). So the thread first registers tsx itself, then imports the .ts entry; compiled, the thread
// runs dist/runtime/worker-thread.js directly.
import { Worker } from "node:worker_threads";
import pino from "pino";
import { AggregatorRegistry, type Registry } from "prom-client";
import type { Config } from "../config.ts";
import type { Logger } from "../lib/logger.ts";
import { isDefaultMetric } from "../lib/metrics.ts";
import {
  type FromThread,
  type MetricFamilies,
  type ToThread,
  WORKER_THREAD_KIND,
  type WorkerThreadData,
} from "./thread-protocol.ts";

export type ThreadExit = { exitCode: number; error: Error | null };

export type WorkerThread = {
  /** resolves once startWorker() ran in the thread; rejects when it failed or the thread died */
  ready: Promise<void>;
  /** false once the thread has exited (or crashed) */
  alive: () => boolean;
  /** the thread's metric families; [] when it does not answer within timeoutMs */
  metrics: (timeoutMs?: number) => Promise<MetricFamilies>;
  /** asks the thread to close its parts within deadlineMs; resolves when it exited cleanly */
  stop: (deadlineMs: number) => Promise<void>;
  /** called once when the thread ends without having been asked to stop */
  onUnexpectedExit: (cb: (e: ThreadExit) => void) => void;
};

function threadEntry(): { entry: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (!here.endsWith(".ts")) return { entry: new URL("./worker-thread.js", here), eval: false };
  const tsx = import.meta.resolve("tsx/esm/api");
  const entry = new URL("./worker-thread.ts", here).href;
  return {
    entry: `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`,
    eval: true,
  };
}

/**
 * The worker thread's V8 young generation, in MB (two semi-spaces and the new large-object space:
 * 3 x 16 MB semi-spaces), what V8 11 (Node 20) sizes it to by default. V8 13 (Node 24) grows the
 * new space of a busy isolate to 128 MB (64 MB semi-spaces) on Node's builds, which are without
 * pointer compression: about 100 MB more resident per busy thread. Pinned, so that the thread's
 * memory does not change with the Node line.
 */
export const WORKER_YOUNG_GENERATION_MB = 48;

export function startWorkerThread(config: Config, logger: Logger): WorkerThread {
  const { entry, eval: isEval } = threadEntry();
  const data: WorkerThreadData = { kind: WORKER_THREAD_KIND, config };
  const worker = new Worker(entry, {
    eval: isEval,
    workerData: data,
    name: "simmeter-worker",
    resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
  });
  // The thread's log lines are written through the main logger's own stream (see worker-thread.ts).
  const stream = (logger as unknown as Record<symbol, { write: (s: string) => void } | undefined>)[
    pino.symbols.streamSym
  ];
  const out = stream ?? { write: (s: string) => process.stderr.write(s) };
  const send = (m: ToThread) => worker.postMessage(m);

  let exited = false;
  let stopRequested = false;
  let lastError: Error | null = null;
  let unexpected: ((e: ThreadExit) => void) | null = null;
  let closedClean: boolean | null = null;
  const pendingMetrics = new Map<number, (f: MetricFamilies) => void>();
  let nextId = 1;

  let markReady: () => void = () => {};
  let failReady: (e: Error) => void = () => {};
  let readySettled = false;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = () => {
      readySettled = true;
      resolve();
    };
    failReady = (e) => {
      readySettled = true;
      reject(e);
    };
  });
  ready.catch(() => {});

  const exitPromise = new Promise<number>((resolve) => {
    worker.on("exit", (code) => {
      exited = true;
      for (const r of pendingMetrics.values()) r([]);
      pendingMetrics.clear();
      if (!readySettled)
        failReady(lastError ?? new Error(`worker thread exited (${code}) during start-up`));
      if (!stopRequested) unexpected?.({ exitCode: code, error: lastError });
      resolve(code);
    });
  });

  worker.on("error", (err) => {
    // An uncaught exception (or unhandled rejection) in the thread; 'exit' follows.
    lastError = err;
  });
  worker.on("messageerror", (err) => {
    logger.error({ err: err.message }, "unreadable message from the worker thread");
  });
  worker.on("message", (m: FromThread) => {
    switch (m.type) {
      case "log":
        out.write(m.line);
        return;
      case "ready":
        markReady();
        return;
      case "startup-failed":
        failReady(new Error(m.error));
        return;
      case "metrics":
        pendingMetrics.get(m.id)?.(m.families);
        pendingMetrics.delete(m.id);
        return;
      case "closed":
        closedClean = m.clean;
        // Its closers are done; a handle a timed-out closer left open must not keep it alive.
        setTimeout(() => void worker.terminate(), 1000).unref();
        return;
      default: {
        const never: never = m;
        logger.warn({ message: never }, "unknown message from the worker thread");
      }
    }
  });

  return {
    ready,
    alive: () => !exited,
    metrics: (timeoutMs = 2000) => {
      if (exited) return Promise.resolve([]);
      const id = nextId++;
      return new Promise<MetricFamilies>((resolve) => {
        const timer = setTimeout(() => {
          pendingMetrics.delete(id);
          logger.warn({ timeoutMs }, "worker thread did not answer for /metrics in time");
          resolve([]);
        }, timeoutMs);
        pendingMetrics.set(id, (f) => {
          clearTimeout(timer);
          resolve(f);
        });
        send({ type: "metrics", id });
      });
    },
    stop: async (deadlineMs) => {
      stopRequested = true;
      // Already gone: the host has reported how (onUnexpectedExit or a failed start-up).
      if (exited) return;
      // Leave the thread a little less than the host's share, so its answer arrives in time.
      send({ type: "shutdown", deadlineMs: Math.max(0, deadlineMs - 250) });
      const timer = setTimeout(() => void worker.terminate(), Math.max(0, deadlineMs));
      try {
        await exitPromise;
      } finally {
        clearTimeout(timer);
      }
      if (lastError) throw lastError;
      if (closedClean !== true) throw new Error("worker thread did not shut down cleanly");
    },
    onUnexpectedExit: (cb) => {
      unexpected = cb;
    },
  };
}

/**
 * One /metrics answer from both threads' registries. Each simmeter family is created in both
 * threads (createMetrics) but updated in one of them only (the receiver's or the worker's), so a
 * family present in both is summed series by series (the other thread's copy is 0 or empty);
 * families of only one thread pass through unchanged ('first': prom-client's own default
 * aggregators would 'omit' process_start_time_seconds). The worker's default metrics (process_*,
 * nodejs_*) are left out: CPU, RSS and file descriptors are the process's, already reported by the
 * main thread, whose event loop is the one that answers webhooks.
 */
export function mergeMetrics(local: MetricFamilies, remote: MetricFamilies): Registry {
  const fromThread = remote.filter((f) => !isDefaultMetric(f.name));
  const localNames = new Set(local.map((f) => f.name));
  const both = new Set(fromThread.filter((f) => localNames.has(f.name)).map((f) => f.name));
  const tag = (f: MetricFamilies[number]) => ({
    ...f,
    aggregator: both.has(f.name) ? ("sum" as const) : ("first" as const),
  });
  return AggregatorRegistry.aggregate([local.map(tag), fromThread.map(tag)]);
}
