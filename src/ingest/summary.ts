// Pure: what one job did, for the worker's metrics and logs and the CLI's replay totals.

export type IngestSummary = {
  events: number;
  counted: number;
  duplicates: number;
  quarantined: number;
  testEvents: number;
  nonBilling: number;
  sessions: number;
  /** event time → counted, ms, for each newly counted event */
  lagsMs: number[];
  byKind: Record<string, number>;
};

export function emptySummary(): IngestSummary {
  return {
    events: 0,
    counted: 0,
    duplicates: 0,
    quarantined: 0,
    testEvents: 0,
    nonBilling: 0,
    sessions: 0,
    lagsMs: [],
    byKind: {},
  };
}

/**
 * An event new to the ledger. Its kind and lag stay in the summary even when its session is then
 * refused (only `counted` is taken back, by `uncount`): the event did arrive and was looked at.
 */
export function countClaimed(s: IngestSummary, kind: string, eventTs: number, now: number): void {
  s.counted++;
  s.byKind[kind] = (s.byKind[kind] ?? 0) + 1;
  s.lagsMs.push(now - eventTs);
}

export function uncount(s: IngestSummary, n: number): void {
  s.counted -= n;
}
