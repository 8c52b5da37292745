import type { Logger } from "./logger.ts";

export type Closer = { name: string; close: () => Promise<void> | void };

/** Runs closers in order, each against what is left of one overall deadline. */
export async function closeAll(
  closers: Closer[],
  deadlineMs: number,
  logger: Logger,
): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  let clean = true;
  for (const c of closers) {
    const left = Math.max(0, end - Date.now());
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), left);
    });
    try {
      const r = await Promise.race([Promise.resolve(c.close()).then(() => "ok" as const), timeout]);
      if (r === "timeout") {
        clean = false;
        logger.warn({ part: c.name }, "shutdown deadline passed; continuing");
      }
    } catch (err) {
      clean = false;
      logger.warn({ part: c.name, err: (err as Error).message }, "error while closing");
    } finally {
      clearTimeout(timer);
    }
  }
  return clean;
}

/**
 * Calls handler once on the first SIGINT or SIGTERM. A supervisor often follows a terminal's Ctrl-C
 * with its own SIGTERM, so further signals are ignored; only a second SIGINT (a person pressing
 * Ctrl-C again) forces an immediate exit.
 */
export function onSignals(handler: (signal: string) => void): void {
  let called = false;
  for (const s of ["SIGINT", "SIGTERM"] as const) {
    process.on(s, () => {
      if (called) {
        if (s === "SIGINT") process.exit(130);
        return;
      }
      called = true;
      handler(s);
    });
  }
}
