import type { IngestJobData } from "./job.ts";
import type { IngestSummary } from "./summary.ts";

// Group commit on the worker's side, as the receiver's enqueuer does on its side
// (src/receive/enqueue.ts): the jobs that BullMQ hands the worker while a commit is pending share
// one ledger transaction. A transaction's cost is dominated by the B-tree pages it dirties (the
// dedupe index by event_sid and the readings by session are keyed at random), and a page dirtied
// by one event costs nothing more for the next: on a 4,000-SIM fleet, 10,000 events per commit
// ingest 1.5x as fast as 2,000 (BENCHMARKS.md).
//
// The jobs' deliveries are ingested as one job, in the order the jobs arrived: exactly what the
// receiver produces when it groups those deliveries itself, so nothing about accounting changes.
// All jobs of a commit succeed or fail together; a failed commit fails each of them, and BullMQ
// retries each (the worker commits a retried job alone).

/** what a job reports to BullMQ (replay and requeue sum these over their jobs) */
export type JobResult = {
  counted: number;
  duplicates: number;
  quarantined: number;
  /** the commit's first job, when this one's events were counted in (and reported by) that one */
  committedWith?: string;
};

export type CommitGroupOptions = {
  /** most jobs per commit (1: a transaction per job) */
  maxJobs: number;
  /** most delivery text per commit, UTF-16 code units; a larger job commits alone */
  maxChars: number;
  /**
   * a commit waits for more jobs while they keep coming: until none has joined for `gapMs`, and
   * at most `maxWaitMs` after its first job joined
   */
  gapMs: number;
  maxWaitMs: number;
  /** the commit: one ledger transaction over the deliveries of every job given */
  commit: (data: IngestJobData) => Promise<IngestSummary>;
  /** after each commit, with how many jobs it held and its summary */
  onCommit?: (jobs: number, summary: IngestSummary) => void;
};

type Waiter = {
  id: string;
  data: IngestJobData;
  chars: number;
  alone: boolean;
  /** Date.now() when it joined */
  joined: number;
  resolve: (r: JobResult) => void;
  reject: (e: unknown) => void;
};

/** the delivery text of a job (its weight against maxChars; a parsed event counts 1,000) */
export function jobChars(data: IngestJobData): number {
  let n = 0;
  for (const d of data.deliveries) {
    if (d.body !== undefined) n += d.body.length;
    for (const l of d.lines ?? []) n += l.length;
    if (d.events) n += d.events.length * 1000;
  }
  return n;
}

export type CommitGroup = {
  /**
   * resolves with this job's result once the commit holding it has committed; `alone`: in a
   * commit of its own, so that its result is its own (a requeued job's outcome is read per job)
   */
  add: (id: string, data: IngestJobData, alone?: boolean) => Promise<JobResult>;
};

export function createCommitGroup(o: CommitGroupOptions): CommitGroup {
  const waiting: Waiter[] = [];
  let chars = 0;
  let timer: NodeJS.Timeout | null = null;
  let committing = false;

  const full = () =>
    waiting.length >= o.maxJobs || chars >= o.maxChars || waiting.some((w) => w.alone);

  const take = (): Waiter[] => {
    const out: Waiter[] = [];
    let used = 0;
    while (waiting.length > 0 && out.length < o.maxJobs) {
      const next = waiting[0] as Waiter;
      if (out.length > 0 && (next.alone || used + next.chars > o.maxChars)) break;
      out.push(next);
      used += next.chars;
      waiting.shift();
      if (next.alone) break;
    }
    chars -= used;
    return out;
  };

  const commitNext = async () => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (committing || waiting.length === 0) return;
    committing = true;
    const batch = take();
    try {
      const summary = await o.commit({
        v: 1,
        deliveries: batch.flatMap((w) => w.data.deliveries),
      });
      o.onCommit?.(batch.length, summary);
      const first = batch[0] as Waiter;
      first.resolve({
        counted: summary.counted,
        duplicates: summary.duplicates,
        quarantined: summary.quarantined,
      });
      for (const w of batch.slice(1))
        w.resolve({ counted: 0, duplicates: 0, quarantined: 0, committedWith: first.id });
    } catch (err) {
      for (const w of batch) w.reject(err);
    } finally {
      committing = false;
      schedule();
    }
  };

  const schedule = () => {
    if (committing || waiting.length === 0) return;
    if (full()) {
      void commitNext();
      return;
    }
    if (timer) clearTimeout(timer);
    const left = Math.max(0, (waiting[0] as Waiter).joined + o.maxWaitMs - Date.now());
    timer = setTimeout(() => void commitNext(), Math.min(o.gapMs, left));
  };

  return {
    add(id, data, alone = false) {
      return new Promise<JobResult>((resolve, reject) => {
        const w: Waiter = {
          id,
          data,
          chars: jobChars(data),
          alone,
          joined: Date.now(),
          resolve,
          reject,
        };
        waiting.push(w);
        chars += w.chars;
        schedule();
      });
    },
  };
}
