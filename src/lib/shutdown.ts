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

export function onSignals(handler: (signal: string) => void): void {
  let called = false;
  for (const s of ["SIGINT", "SIGTERM"] as const) {
    process.on(s, () => {
      if (called) {
        process.exit(1);
      }
      called = true;
      handler(s);
    });
  }
}
