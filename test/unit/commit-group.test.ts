import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createCommitGroup, type JobResult } from "../../src/ingest/commit-group.ts";
import type { IngestJobData } from "../../src/ingest/job.ts";
import { emptySummary, type IngestSummary } from "../../src/ingest/summary.ts";

// The worker's group commit (src/ingest/commit-group.ts): jobs added while a commit is pending
// share the next one, in arrival order, within the job and size limits; a requeued job commits
// alone; a failed commit fails each of its jobs; the results summed over jobs are the commits'.

const job = (id: string, chars: number): IngestJobData => ({
  v: 1,
  deliveries: [{ id, receivedAt: 0, source: "twilio", body: "x".repeat(chars) }],
});

/** a commit that counts one event per delivery and records what it was given */
function recorder(opts: { fail?: (ids: string[]) => boolean; delayMs?: number } = {}) {
  const commits: string[][] = [];
  const commit = async (data: IngestJobData): Promise<IngestSummary> => {
    const ids = data.deliveries.map((d) => d.id);
    commits.push(ids);
    if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
    if (opts.fail?.(ids)) throw new Error(`disk full at ${ids[0]}`);
    return { ...emptySummary(), events: ids.length, counted: ids.length };
  };
  return { commits, commit };
}

describe("createCommitGroup", () => {
  it("groups the jobs that arrive together, in order, up to maxJobs per commit", async () => {
    const r = recorder();
    const g = createCommitGroup({ maxJobs: 4, maxChars: 1e9, gapMs: 5, maxWaitMs: 100, ...r });
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => g.add(`j${i}`, job(`j${i}`, 10))),
    );
    expect(r.commits).toEqual([
      ["j0", "j1", "j2", "j3"],
      ["j4", "j5", "j6", "j7"],
      ["j8", "j9"],
    ]);
    // the first job of a commit reports it; the others name that job and add nothing
    expect(results[0]).toEqual({ counted: 4, duplicates: 0, quarantined: 0 });
    expect(results[1]).toEqual({ counted: 0, duplicates: 0, quarantined: 0, committedWith: "j0" });
    expect(results.reduce((n, x) => n + x.counted, 0)).toBe(10);
  });

  it("a job alone commits after the gap, without waiting for maxJobs", async () => {
    const r = recorder();
    const g = createCommitGroup({ maxJobs: 16, maxChars: 1e9, gapMs: 5, maxWaitMs: 100, ...r });
    const t = Date.now();
    await g.add("j0", job("j0", 10));
    expect(Date.now() - t).toBeLessThan(1000);
    expect(r.commits).toEqual([["j0"]]);
  });

  it("stops a commit before maxChars (a larger job commits alone) and keeps a requeued job alone", async () => {
    const r = recorder();
    const g = createCommitGroup({ maxJobs: 16, maxChars: 100, gapMs: 5, maxWaitMs: 100, ...r });
    await Promise.all([
      g.add("a", job("a", 40)),
      g.add("b", job("b", 40)),
      g.add("c", job("c", 40)),
      g.add("big", job("big", 500)),
      g.add("d", job("d", 10)),
      g.add("r", job("r", 10), true),
      g.add("e", job("e", 10)),
    ]);
    expect(r.commits).toEqual([["a", "b"], ["c"], ["big"], ["d"], ["r"], ["e"]]);
  });

  it("a failed commit fails each of its jobs with the error, and the next commit goes on", async () => {
    const r = recorder({ fail: (ids) => ids.includes("j1") });
    const g = createCommitGroup({ maxJobs: 2, maxChars: 1e9, gapMs: 5, maxWaitMs: 100, ...r });
    const out = await Promise.allSettled(["j0", "j1", "j2"].map((id) => g.add(id, job(id, 10))));
    expect(out.map((o) => o.status)).toEqual(["rejected", "rejected", "fulfilled"]);
    expect((out[0] as PromiseRejectedResult).reason.message).toBe("disk full at j0");
    expect(r.commits).toEqual([["j0", "j1"], ["j2"]]);
  });

  it("property: every job is answered once, in one commit, in arrival order, within the limits; the counts add up", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            chars: fc.integer({ min: 1, max: 60 }),
            alone: fc.boolean(),
            pauseMs: fc.constantFrom(0, 0, 0, 2, 12),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 5 }),
        async (jobs, maxJobs, delayMs) => {
          const r = recorder({ delayMs });
          const maxChars = 100;
          const g = createCommitGroup({ maxJobs, maxChars, gapMs: 3, maxWaitMs: 20, ...r });
          const pending: Promise<JobResult>[] = [];
          for (const [i, j] of jobs.entries()) {
            pending.push(g.add(`j${i}`, job(`j${i}`, j.chars), j.alone));
            if (j.pauseMs) await new Promise((res) => setTimeout(res, j.pauseMs));
          }
          const results = await Promise.all(pending);
          expect(r.commits.flat()).toEqual(jobs.map((_, i) => `j${i}`));
          for (const c of r.commits) {
            expect(c.length).toBeLessThanOrEqual(maxJobs);
            const idx = c.map((id) => Number(id.slice(1)));
            const chars = idx.reduce((n, i) => n + (jobs[i]?.chars ?? 0), 0);
            if (c.length > 1) {
              expect(chars).toBeLessThanOrEqual(maxChars);
              for (const i of idx) expect(jobs[i]?.alone).toBe(false);
            }
          }
          expect(results.reduce((n, x) => n + x.counted, 0)).toBe(jobs.length);
        },
      ),
      { numRuns: 60 },
    );
  });
});
