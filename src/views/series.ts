// Time series the console plots (and GET /api/usage/series, /api/ingest/lag serve): usage per hour
// or day, optionally of one customer or one SIM, and ingest lag per hour. Every bucket of the
// range is present (zero-filled), so a chart's axis is continuous; period labels are those of
// `simmeter usage --by hour|day` (2026-11-01T10:00:00Z, 2026-11-01), so a point equals the sum of
// that period's rows in `simmeter usage --json`.
import { z } from "zod";
import { DAY_MS, dayStart, HOUR_MS, hourStart } from "../accounting/buckets.ts";
import type { Ledger } from "../ledger/port.ts";
import { iso, timeParam } from "./json.ts";

/** The longest range one series covers: about three months of hours, or ten years of days. */
export const MAX_SERIES_POINTS = 2400;

export const SERIES_GRANULARITIES = ["hour", "day"] as const;
export type SeriesGranularity = (typeof SERIES_GRANULARITIES)[number];

/** Why an explicit from/to pair cannot be served (zod refinement: the API answers 400). */
function rangeIssue(g: SeriesGranularity, from?: number, to?: number): string | null {
  if (from === undefined || to === undefined) return null;
  if (from >= to) return "must be before to";
  const n = Math.ceil((to - bucketStart(g, from)) / bucketMs(g));
  return n > MAX_SERIES_POINTS
    ? `with to, ${n} ${g}s: more than ${MAX_SERIES_POINTS} points (narrow from/to, or granularity=day)`
    : null;
}

export const UsageSeriesParams = z
  .object({
    from: timeParam("from")
      .optional()
      .meta({ description: "start (rounded down to the bucket); default 72 hours (30 days) ago" }),
    to: timeParam("to").optional().meta({
      description: "end, exclusive (rounded up to the bucket); default the current bucket's end",
    }),
    granularity: z.enum(SERIES_GRANULARITIES).default("hour"),
    customer: z
      .string()
      .regex(/^cus_[A-Za-z0-9]{1,64}$/, "a Stripe customer id (cus_…)")
      .optional()
      .meta({ description: "only the SIM-hours attributed to this customer" }),
    sim: z
      .string()
      .regex(/^HS[0-9a-fA-F]{32}$/, "a Super SIM SID (HS…)")
      .optional()
      .meta({ description: "only this SIM" }),
  })
  .superRefine((p, ctx) => {
    const issue = rangeIssue(p.granularity, p.from, p.to);
    if (issue) ctx.addIssue({ code: "custom", message: issue, path: ["from"] });
  });
export type UsageSeriesParams = z.output<typeof UsageSeriesParams>;

export const UsagePoint = z
  .object({
    period: z.string().meta({ description: "2026-11-01T10:00:00Z (hour) or 2026-11-01 (day)" }),
    start: z.string(),
    bytes: z.number().int(),
  })
  .meta({ id: "UsagePoint" });

export const UsageSeries = z
  .object({
    object: z.literal("usage_series"),
    granularity: z.enum(SERIES_GRANULARITIES),
    from: z.string(),
    to: z.string(),
    customer_id: z.string().nullable(),
    sim_sid: z.string().nullable(),
    total: z.number().int(),
    points: z.array(UsagePoint),
  })
  .meta({ id: "UsageSeries" });
export type UsageSeries = z.output<typeof UsageSeries>;

const bucketMs = (g: SeriesGranularity) => (g === "hour" ? HOUR_MS : DAY_MS);
const bucketStart = (g: SeriesGranularity, t: number) =>
  g === "hour" ? hourStart(t) : dayStart(t);
const label = (g: SeriesGranularity, t: number) =>
  g === "hour" ? `${iso(t).slice(0, 13)}:00:00Z` : iso(t).slice(0, 10);

/**
 * The buckets of [from, to): from rounded down, to rounded up. A range beyond MAX_SERIES_POINTS
 * keeps its end and is cut at the start (the API refuses one given explicitly, see rangeIssue).
 */
export function seriesRange(
  g: SeriesGranularity,
  now: number,
  from: number | undefined,
  to: number | undefined,
): { from: number; to: number; buckets: number[] } {
  const step = bucketMs(g);
  const end = to === undefined ? bucketStart(g, now) + step : bucketStart(g, to - 1) + step;
  const start = Math.max(
    bucketStart(g, from ?? end - (g === "hour" ? 72 : 30) * step),
    end - MAX_SERIES_POINTS * step,
  );
  const buckets: number[] = [];
  for (let t = start; t < end; t += step) buckets.push(t);
  return { from: start, to: end, buckets };
}

/**
 * Counted bytes per hour or day over a range: of all SIMs, of one SIM, or of the SIM-hours the
 * customer resolver attributes to one customer (the reporter's rule, src/customers/resolve.ts).
 */
export async function usageSeries(
  ledger: Pick<Ledger, "views" | "customers">,
  p: UsageSeriesParams,
  now: number,
): Promise<UsageSeries> {
  const g = p.granularity;
  const range = seriesRange(g, now, p.from, p.to);
  const totals = new Map<number, number>(range.buckets.map((b) => [b, 0]));
  // Of one customer: the SIM-hours the history gives it (the reporter's rule).
  const kept =
    p.customer !== undefined
      ? (await ledger.customers.usageOwned(range.from, range.to)).filter(
          (u) =>
            u.bytes !== 0 &&
            u.customer === p.customer &&
            (p.sim === undefined || u.simSid === p.sim),
        )
      : await ledger.views.usageRows(range.from, range.to, p.sim);
  let total = 0;
  for (const r of kept) {
    const b = bucketStart(g, r.hour);
    totals.set(b, (totals.get(b) ?? 0) + r.bytes);
    total += r.bytes;
  }
  return {
    object: "usage_series",
    granularity: g,
    from: iso(range.from),
    to: iso(range.to),
    customer_id: p.customer ?? null,
    sim_sid: p.sim ?? null,
    total,
    points: range.buckets.map((b) => ({
      period: label(g, b),
      start: iso(b),
      bytes: totals.get(b) ?? 0,
    })),
  };
}

export const IngestLagParams = z
  .object({
    from: timeParam("from").optional().meta({ description: "default 72 hours ago" }),
    to: timeParam("to")
      .optional()
      .meta({ description: "exclusive; default the current hour's end" }),
  })
  .superRefine((p, ctx) => {
    const issue = rangeIssue("hour", p.from, p.to);
    if (issue) ctx.addIssue({ code: "custom", message: issue, path: ["from"] });
  });

export const IngestLag = z
  .object({
    object: z.literal("ingest_lag"),
    from: z.string(),
    to: z.string(),
    points: z.array(
      z.object({
        hour: z.string().meta({ description: "the hour of the events' own time" }),
        events: z.number().int().meta({ description: "events counted with a time in this hour" }),
        avg_lag_ms: z.number().int().nullable(),
        max_lag_ms: z.number().int().nullable(),
      }),
    ),
  })
  .meta({
    id: "IngestLag",
    description:
      "How long events took from their own time to reaching simmeter's receiver, from the dedupe records (seen_events.received_at − event_ts), per hour of event time. Time spent in the queue is not in the ledger: see queue depth and simmeter_ingest_lag_seconds.",
  });
export type IngestLag = z.output<typeof IngestLag>;

/**
 * Delivery lag per hour from the dedupe records: for the events whose own time falls in the hour,
 * the mean and largest (received − event time). Records older than RETENTION_DAYS are pruned, so
 * the series reaches back at most that far.
 */
export async function ingestLag(
  ledger: Pick<Ledger, "views">,
  p: z.output<typeof IngestLagParams>,
  now: number,
): Promise<IngestLag> {
  const range = seriesRange("hour", now, p.from, p.to);
  const rows = await ledger.views.ingestLag(range.from, range.to);
  const byHour = new Map(rows.map((r) => [r.hour, r]));
  return {
    object: "ingest_lag",
    from: iso(range.from),
    to: iso(range.to),
    points: range.buckets.map((b) => {
      const r = byHour.get(b);
      return {
        hour: iso(b),
        events: r?.events ?? 0,
        avg_lag_ms: r ? r.avgLag : null,
        max_lag_ms: r ? r.maxLag : null,
      };
    }),
  };
}
