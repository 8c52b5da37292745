/**
 * Parses an operator-supplied time as UTC: a date (2026-11-01), or a date-time with or without an
 * offset. A date-time without an offset is UTC, whatever the machine's time zone (JavaScript would
 * read it as local time, which would move a customer switch by hours).
 */
export function parseUtcTime(value: string, name: string): number {
  const v = value.trim();
  let text = v;
  if (/^\d{4}-\d{2}-\d{2}$/.test(v)) text = `${v}T00:00:00Z`;
  else if (/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(v))
    text = `${v.replace(" ", "T")}Z`;
  const t = Date.parse(text);
  if (Number.isNaN(t)) {
    throw new Error(
      `${name} ${JSON.stringify(value)} is not an ISO 8601 time in UTC (e.g. 2026-11-01 or 2026-11-01T13:00:00Z)`,
    );
  }
  return t;
}
