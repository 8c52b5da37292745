import type { MetricObjectWithValues, MetricValue } from "prom-client";
import type { Config } from "../config.ts";

// Messages between `simmeter start`'s main thread (receiver) and its worker thread (ingest worker,
// reporter, prune). See worker-host.ts for why the worker role runs in a thread.

/** workerData of the worker thread; `kind` lets worker-thread.ts tell it was started by the host. */
export type WorkerThreadData = { kind: typeof WORKER_THREAD_KIND; config: Config };
export const WORKER_THREAD_KIND = "simmeter-worker-role";

export type MetricFamilies = MetricObjectWithValues<MetricValue<string>>[];

export type ToThread =
  | { type: "metrics"; id: number }
  /** close the worker role's parts against deadlineMs, then end the thread */
  | { type: "shutdown"; deadlineMs: number };

export type FromThread =
  /** one pino line (ends with a newline), written by the main thread's log stream */
  | { type: "log"; line: string }
  /** startWorker() resolved: the ingest worker (and reporter) run */
  | { type: "ready" }
  | { type: "startup-failed"; error: string }
  | { type: "metrics"; id: number; families: MetricFamilies }
  | { type: "closed"; clean: boolean };
