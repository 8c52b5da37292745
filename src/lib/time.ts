import { z } from "zod";

const isoDate = z.iso.date();
// RFC 3339 profile of ISO 8601; `local` admits a time without an offset (read as UTC below).
const isoDateTime = z.iso.datetime({ offset: true, local: true });
const HAS_OFFSET = /(?:Z|[+-]\d{2}:\d{2})$/;
const EXAMPLES = "e.g. 2026-11-01, 2026-11-01T13:00 (UTC) or 2026-11-01T13:00:00+01:00";

/**
 * Parses an operator-supplied time (command options, CSV `effective_from`, `/api/usage?from=`) as
 * ISO 8601, the same way whatever the machine's time zone (`TZ`):
 *
 * - `YYYY-MM-DD`: midnight UTC of that day;
 * - `YYYY-MM-DDTHH:MM[:SS[.fff…]]`: without an offset it is UTC, with `Z` or `±HH:MM` as written;
 * - a single space may stand for the `T` (`2026-11-20 10:30`).
 *
 * Anything else (`01/12/2026`, `2026/11/20 10:00`, `12`, `0`, `2026-11`, `+0530`, lower-case `t`)
 * and impossible calendar dates (`2026-02-30`, `2025-02-29`) are refused: JavaScript's
 * `Date.parse` would read some of them in the local time zone or roll them into the next month.
 * Returns epoch ms; throws an Error naming `name`, the value and an example.
 */
export function parseUtcTime(value: string, name: string): number {
  const text = normalise(typeof value === "string" ? value.trim() : "");
  const t = text === null ? Number.NaN : Date.parse(text);
  if (Number.isNaN(t) || !realCalendarDate((text as string).slice(0, 10))) {
    throw new Error(
      `${name} ${JSON.stringify(value)} is not an ISO 8601 time (${EXAMPLES}; without an offset it is UTC)`,
    );
  }
  return t;
}

/** The value as a fully qualified ISO 8601 date-time (Z or offset), or null when not accepted. */
function normalise(v: string): string | null {
  if (isoDate.safeParse(v).success) return `${v}T00:00:00Z`;
  let s = /^\d{4}-\d{2}-\d{2} \d/.test(v) ? `${v.slice(0, 10)}T${v.slice(11)}` : v;
  // RFC 3339 (and so zod) wants seconds before a Z or an offset; ISO 8601 lets them be left out.
  s = s.replace(/^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(Z|[+-]\d{2}:\d{2})$/, "$1:00$2");
  if (!isoDateTime.safeParse(s).success) return null;
  return HAS_OFFSET.test(s) ? s : `${s}Z`;
}

/** True when the YYYY-MM-DD date exists: Date.parse rolls 2026-02-30 over to 2 March. */
function realCalendarDate(date: string): boolean {
  const t = Date.parse(`${date}T00:00:00Z`);
  return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === date;
}
