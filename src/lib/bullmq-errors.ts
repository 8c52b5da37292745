import type { Logger } from "./logger.ts";

type ErrorEmitter = { on(event: "error", listener: (err: Error) => void): unknown };

/**
 * Logs a BullMQ object's (Queue, Worker, QueueEvents) 'error' events as JSON. Without a listener
 * BullMQ falls back to printing raw stack traces; with one that logs every event, a Redis outage
 * writes a line per reconnect attempt. So: the first error is logged, then at most one line per
 * `everyMs` carrying how many were left out.
 */
export function logBullmqErrors(
  emitter: ErrorEmitter,
  logger: Logger,
  what: string,
  everyMs = 60_000,
): void {
  let lastAt = 0;
  let suppressed = 0;
  emitter.on("error", (err: Error) => {
    const now = Date.now();
    if (now - lastAt < everyMs) {
      suppressed++;
      return;
    }
    logger.warn({ err: err.message, suppressed, what }, `${what} error`);
    lastAt = now;
    suppressed = 0;
  });
}
