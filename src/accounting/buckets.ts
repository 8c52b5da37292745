// Hour-bucket math. Times are epoch milliseconds, buckets are named by their start.

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;

/**
 * The bucket a reading at time t belongs to. Attributed bytes up to T are the largest cumulative
 * total among readings with t <= T, and a bucket [h, h+1h) holds A(h+1h) - A(h); so a reading
 * belongs to the bucket h with h < t <= h+1h. A reading exactly on the hour closes the previous hour.
 */
export function bucketOf(t: number): number {
  return Math.floor((t - 1) / HOUR_MS) * HOUR_MS;
}

/** The hour that contains t in the ordinary sense: h <= t < h+1h. Used for ranges and reporting. */
export function hourStart(t: number): number {
  return Math.floor(t / HOUR_MS) * HOUR_MS;
}

export function dayStart(t: number): number {
  return Math.floor(t / DAY_MS) * DAY_MS;
}

/** Start of the UTC calendar month that contains t. */
export function monthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Start of the UTC calendar month after the one that contains t. */
export function nextMonthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/**
 * Splits `amount` over the interval (from, to] in proportion to each hour bucket's share of the
 * interval. Shares are exact integers that sum to `amount` (largest remainder; ties go to the later
 * bucket so that rounding never moves bytes backwards in time).
 */
export function prorate(amount: number, from: number, to: number): Map<number, number> {
  const out = new Map<number, number>();
  if (amount === 0) return out;
  if (to <= from) {
    out.set(bucketOf(to), amount);
    return out;
  }
  const len = BigInt(to - from);
  const total = BigInt(amount);
  const parts: { bucket: number; share: bigint; rem: bigint }[] = [];
  let assigned = 0n;
  // Walk buckets (h, h+1h] that overlap (from, to].
  for (let h = bucketOf(from + 1); h < to; h += HOUR_MS) {
    const lo = Math.max(h, from);
    const hi = Math.min(h + HOUR_MS, to);
    if (hi <= lo) continue;
    const num = total * BigInt(hi - lo);
    const share = num / len;
    parts.push({ bucket: h, share, rem: num % len });
    assigned += share;
  }
  let left = total - assigned;
  const byRemainder = parts
    .map((p, i) => ({ p, i }))
    .sort((a, b) => (a.p.rem === b.p.rem ? b.i - a.i : a.p.rem > b.p.rem ? -1 : 1));
  for (const { p } of byRemainder) {
    if (left <= 0n) break;
    p.share += 1n;
    left -= 1n;
  }
  for (const p of parts) if (p.share !== 0n) out.set(p.bucket, Number(p.share));
  return out;
}
