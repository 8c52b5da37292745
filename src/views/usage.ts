import { z } from "zod";
import type { Ledger } from "../ledger/port.ts";
import { queryUsage } from "../usage/query.ts";
import { CursorError, listOf, page, pageParams, timeParam } from "./json.ts";

export const GRANULARITIES = ["hour", "day", "month", "total"] as const;

export const UsageParams = z.object({
  sim: z
    .string()
    .optional()
    .meta({ description: "only these SIM SIDs, comma-separated", example: "HS0123…,HS4567…" }),
  from: timeParam("from").optional(),
  to: timeParam("to").optional().meta({ description: "exclusive" }),
  granularity: z.enum(GRANULARITIES).default("hour"),
  ...pageParams,
});
export type UsageParams = z.output<typeof UsageParams>;

export const UsageItem = z
  .object({
    sim_sid: z.string(),
    period: z.string().meta({
      description: "2026-11-01T10:00:00Z (hour), 2026-11-01 (day), 2026-11 (UTC month) or total",
    }),
    bytes: z.number().int(),
  })
  .meta({ id: "Usage" });
export type UsageItem = z.output<typeof UsageItem>;
export const UsageList = listOf(UsageItem, "UsageList");

/** Per SIM usage per hour, day, UTC month or in total (GET /api/usage, `simmeter usage`). */
export async function usageList(ledger: Ledger, p: UsageParams) {
  let after: { simSid: string; period: string } | undefined;
  if (p.starting_after !== undefined) {
    const i = p.starting_after.indexOf("/");
    if (i <= 0)
      throw new CursorError(
        `starting_after ${JSON.stringify(p.starting_after)} is not a cursor from this list`,
      );
    after = { simSid: p.starting_after.slice(0, i), period: p.starting_after.slice(i + 1) };
  }
  const sims = p.sim
    ?.split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const rows = await queryUsage(ledger, {
    granularity: p.granularity,
    ...(sims && sims.length > 0 ? { sims } : {}),
    ...(p.from !== undefined ? { from: p.from } : {}),
    ...(p.to !== undefined ? { to: p.to } : {}),
    ...(after ? { after } : {}),
    limit: p.limit + 1,
  });
  return page(
    rows,
    p.limit,
    (r) => `${r.simSid}/${r.period}`,
    (r): UsageItem => ({ sim_sid: r.simSid, period: r.period, bytes: r.bytes }),
  );
}

export const UnmappedParams = z.object(pageParams);
export const UnmappedItem = z
  .object({
    sim_sid: z.string(),
    iccid: z.string().nullable(),
    fleet_sid: z.string().nullable(),
    bytes: z.number().int(),
    first_hour: z.string(),
    last_hour: z.string(),
  })
  .meta({ id: "UnmappedUsage" });
export type UnmappedItem = z.output<typeof UnmappedItem>;
export const UnmappedList = listOf(UnmappedItem, "UnmappedUsageList");

/**
 * SIMs with usage no customer assignment covers (GET /api/usage/unmapped, `usage --unmapped`):
 * kept, and reported as soon as an assignment covers them.
 */
export async function unmappedList(ledger: Ledger, p: z.output<typeof UnmappedParams>) {
  const all = (await ledger.reads.unmapped()).sort((a, b) =>
    a.simSid < b.simSid ? -1 : a.simSid > b.simSid ? 1 : 0,
  );
  const after = p.starting_after;
  const rows = (after === undefined ? all : all.filter((r) => r.simSid > after)).slice(
    0,
    p.limit + 1,
  );
  return page(
    rows,
    p.limit,
    (r) => r.simSid,
    (r): UnmappedItem => ({
      sim_sid: r.simSid,
      iccid: r.iccid,
      fleet_sid: r.fleetSid,
      bytes: r.bytes,
      first_hour: r.firstHour,
      last_hour: r.lastHour,
    }),
  );
}
