import { readFileSync } from "node:fs";
import type { GroundTruth } from "../../src/simulate/fleet.ts";
import type { TestLedger } from "../helpers/ledger.ts";
import { waitFor } from "../helpers/process.ts";

/** Resident and peak resident set size of a live process, in MB, from /proc/<pid>/status. */
export function memoryOf(pid: number | undefined): { rssMb: number; hwmMb: number } {
  if (pid === undefined) throw new Error("process has no pid");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    if (!m?.[1]) throw new Error(`${field} missing from /proc/${pid}/status`);
    return Number(m[1]);
  };
  return {
    rssMb: Math.round((kb("VmRSS") / 1024) * 10) / 10,
    hwmMb: Math.round((kb("VmHWM") / 1024) * 10) / 10,
  };
}

/** The simulator's ground truth in usageOf's shape: `${sim}@${ISO hour}` → bytes, zeros left out. */
export function truthRecord(truth: GroundTruth): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [sim, hours] of truth.simHour) {
    for (const [hour, bytes] of hours) {
      if (bytes !== 0) out[`${sim}@${new Date(hour).toISOString()}`] = bytes;
    }
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** simmeter_queue_depth{state=...} from the receiver's /metrics. */
export async function queueDepth(adminUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^simmeter_queue_depth\{state="(\w+)"\} (\d+)$/gm)) {
    if (m[1] && m[2]) out[m[1]] = Number(m[2]);
  }
  return out;
}

/**
 * Waits until the queue holds nothing waiting, active or delayed and the database has stopped
 * changing (usage and quarantine identical over two consecutive polls), on either backend.
 */
export async function waitDrained(
  adminUrl: string,
  ledger: Pick<TestLedger, "sql" | "usage">,
  timeoutMs: number,
) {
  let last = "";
  let depth: Record<string, number> = {};
  await waitFor(
    async () => {
      const d = await queueDepth(adminUrl);
      depth = d;
      if (d.waiting === undefined || d.active === undefined) return false;
      const idle = d.waiting === 0 && d.active === 0 && (d.delayed ?? 0) === 0;
      const snapshot = JSON.stringify([
        await ledger.usage(),
        await ledger.sql("select count(*) as n from quarantine"),
        await ledger.sql("select count(*) as n from seen_events"),
      ]);
      const stable = idle && snapshot === last;
      last = idle ? snapshot : "";
      return stable;
    },
    "queue drained and usage stable",
    timeoutMs,
    300,
  ).catch((err: Error) => {
    throw new Error(`${err.message} (queue depth last seen: ${JSON.stringify(depth)})`);
  });
}
