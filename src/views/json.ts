// The one JSON shape of simmeter's answers, shared by the CLI (--json), the admin API and the
// console (docs/json.md): snake_case keys, times as ISO 8601 UTC strings, bytes and money as
// integers, and lists as { object: "list", data, has_more, next_starting_after }.
import { z } from "zod";
import { parseUtcTime } from "../lib/time.ts";

export const MAX_PAGE = 1000;
export const DEFAULT_PAGE = 100;

/** epoch ms → "2026-11-01T10:00:00.000Z"; null stays null */
export function iso(ms: number): string;
export function iso(ms: number | null): string | null;
export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export const isoTime = z.iso.datetime().meta({ example: "2026-11-01T10:00:00.000Z" });

/** A query-string time: an ISO 8601 date or date-time, UTC unless it carries an offset. */
export const timeParam = (name: string) =>
  z
    .string()
    .transform((v, ctx) => {
      try {
        return parseUtcTime(v, name);
      } catch (err) {
        ctx.issues.push({ code: "custom", message: (err as Error).message, input: v });
        return z.NEVER;
      }
    })
    .meta({
      description: "ISO 8601 date or date-time; UTC unless it has an offset",
      example: "2026-11-01",
      override: { type: "string" },
    });

export const pageParams = {
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(MAX_PAGE)
    .default(DEFAULT_PAGE)
    .meta({ description: `items per page, 1 to ${MAX_PAGE}`, override: { type: "integer" } }),
  starting_after: z
    .string()
    .min(1)
    .optional()
    .meta({ description: "next_starting_after of the previous page" }),
};

export type Page = { limit: number; starting_after?: string | undefined };

export type List<T> = {
  object: "list";
  data: T[];
  has_more: boolean;
  /** pass as starting_after to get the next page; null on the last page */
  next_starting_after: string | null;
};

/** A list schema for item schema `item`, registered as component `id`. */
export function listOf<T extends z.ZodType>(item: T, id: string) {
  return z
    .object({
      object: z.literal("list"),
      data: z.array(item),
      has_more: z.boolean(),
      next_starting_after: z.string().nullable(),
    })
    .meta({ id });
}

/**
 * Builds a page from up to limit+1 rows fetched after the cursor: the extra row only says that
 * more exist. `cursorOf` gives the cursor of a row (the last row's is next_starting_after).
 */
export function page<R, T>(
  rows: R[],
  limit: number,
  cursorOf: (r: R) => string,
  toItem: (r: R) => T,
): List<T> {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  const last = kept[kept.length - 1];
  return {
    object: "list",
    data: kept.map(toItem),
    has_more: more,
    next_starting_after: more && last !== undefined ? cursorOf(last) : null,
  };
}

export class CursorError extends Error {
  override name = "CursorError";
}

/** A numeric-id cursor ("123"). */
export function idCursor(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v))
    throw new CursorError(`starting_after ${JSON.stringify(v)} is not a cursor from this list`);
  return Number(v);
}

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * The value with every object key in snake_case (stillPending → still_pending): for the CLI's
 * --json of answers that are not views (run summaries, reconcile rows), so that every JSON answer
 * has the one shape docs/json.md describes. Keys that already are snake_case are unchanged.
 */
export function snakeKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(snakeKeys);
  if (v === null || typeof v !== "object") return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [snake(k), snakeKeys(x)]));
}
