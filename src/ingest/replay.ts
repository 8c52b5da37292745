import { randomUUID } from "node:crypto";
import { createReadStream, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { type Queue, QueueEvents } from "bullmq";
import type { Redis } from "ioredis";
import { withoutBom } from "../events/schema.ts";
import type { JobResult } from "./commit-group.ts";
import { INGEST_JOB, INGEST_QUEUE, type IngestJobData } from "./job.ts";
import { INGEST_JOB_OPTIONS } from "./queue.ts";

export type ReplayProgress = {
  bytesRead: number;
  bytesTotal: number;
  enqueued: number;
  processed: number;
  counted: number;
  duplicates: number;
  quarantined: number;
};

export type ReplayOptions = {
  queue: Queue<IngestJobData>;
  eventsConnection: Redis;
  prefix: string;
  path: string;
  eventsPerJob?: number;
  /** jobs of this replay allowed in the queue at once: keeps Redis and this process flat */
  maxJobsInFlight?: number;
  onProgress?: (p: ReplayProgress) => void;
};

/** Reads CloudEvents (JSON array, or JSON lines) and pushes them through the ingest queue. */
export async function replayFile(o: ReplayOptions): Promise<ReplayProgress> {
  const eventsPerJob = o.eventsPerJob ?? 1000;
  const maxInFlight = o.maxJobsInFlight ?? 16;
  const bytesTotal = statSync(o.path).size;
  const p: ReplayProgress = {
    bytesRead: 0,
    bytesTotal,
    enqueued: 0,
    processed: 0,
    counted: 0,
    duplicates: 0,
    quarantined: 0,
  };
  const queueEvents = new QueueEvents(INGEST_QUEUE, {
    connection: o.eventsConnection,
    prefix: o.prefix,
  });
  await queueEvents.waitUntilReady();
  const ours = new Map<string, number>();
  const early = new Map<string, JobResult>();
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  const settle = (jobId: string, r: JobResult) => {
    const n = ours.get(jobId);
    if (n === undefined) {
      early.set(jobId, r);
      return;
    }
    ours.delete(jobId);
    p.processed += n;
    p.counted += r.counted;
    p.duplicates += r.duplicates;
    p.quarantined += r.quarantined;
    o.onProgress?.(p);
    wake?.();
  };
  queueEvents.on("completed", ({ jobId, returnvalue }) => {
    const r = (
      typeof returnvalue === "string" ? JSON.parse(returnvalue) : returnvalue
    ) as JobResult;
    settle(jobId, r ?? { counted: 0, duplicates: 0, quarantined: 0 });
  });
  queueEvents.on("failed", ({ jobId, failedReason }) => {
    if (ours.has(jobId)) {
      // The job retries by itself; we only surface the reason.
      failure = new Error(`ingest job ${jobId} failed: ${failedReason} (it will be retried)`);
    }
  });
  const waitBelow = async (limit: number) => {
    while (ours.size > limit) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 1000);
      });
      wake = null;
    }
  };
  // Events travel as text so the worker validates exactly what the file holds.
  let batch: string[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const lines = batch;
    batch = [];
    await waitBelow(maxInFlight - 1);
    const job = await o.queue.add(
      INGEST_JOB,
      {
        v: 1,
        deliveries: [{ id: randomUUID(), receivedAt: Date.now(), source: "replay", lines }],
      },
      INGEST_JOB_OPTIONS,
    );
    const id = job.id as string;
    ours.set(id, lines.length);
    p.enqueued += lines.length;
    const done = early.get(id);
    if (done) {
      early.delete(id);
      settle(id, done);
    }
    o.onProgress?.(p);
  };
  try {
    const first = await firstNonSpace(o.path);
    if (first === "[") {
      // A JSON array has to be read whole; JSON lines stream with flat memory. Its elements
      // travel as their own text, like JSON lines and webhook bodies: parsing and re-serialising
      // them here would turn 1e400 into null (and bill data_total instead of quarantining).
      const text = withoutBom(await readFile(o.path, "utf8"));
      let isArray: boolean;
      try {
        isArray = Array.isArray(JSON.parse(text));
      } catch (e) {
        throw new Error(`${o.path}: not valid JSON (${(e as Error).message})`);
      }
      if (!isArray) throw new Error(`${o.path}: expected a JSON array of CloudEvents`);
      p.bytesRead = bytesTotal;
      for (const element of arrayElements(text)) {
        batch.push(element);
        if (batch.length >= eventsPerJob) await flush();
      }
    } else {
      const stream = createReadStream(o.path, { encoding: "utf8" });
      const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
      for await (const line of lines) {
        p.bytesRead += Buffer.byteLength(line) + 1;
        // trim() also drops a byte order mark (U+FEFF), at the start of the file or of a line.
        const text = line.trim();
        if (text === "") continue;
        // A broken line is quarantined by the worker like any unreadable event.
        batch.push(text);
        if (batch.length >= eventsPerJob) await flush();
      }
    }
    await flush();
    await waitBelow(0);
    if (failure && p.processed < p.enqueued) throw failure;
    return p;
  } finally {
    await queueEvents.close();
  }
}

async function firstNonSpace(path: string): Promise<string> {
  const stream = createReadStream(path, { encoding: "utf8", highWaterMark: 1024 });
  for await (const chunk of stream) {
    const m = /\S/.exec(chunk as string);
    if (m) {
      stream.destroy();
      return m[0];
    }
  }
  return "";
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * The text of each element of a JSON array, exactly as written (surrounding white space removed).
 * `text` must be valid JSON whose top level is an array: only strings and nesting are tracked.
 */
export function* arrayElements(text: string): Generator<string> {
  let i = text.indexOf("[") + 1;
  let depth = 0;
  let start = i;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // Skip to the closing quote: one not preceded by an odd number of backslashes.
      let end = text.indexOf('"', i + 1);
      for (;;) {
        let slashes = 0;
        while (text.charCodeAt(end - 1 - slashes) === BACKSLASH) slashes++;
        if (slashes % 2 === 0) break;
        end = text.indexOf('"', end + 1);
      }
      i = end + 1;
      continue;
    }
    if (c === OPEN_ARRAY || c === OPEN_OBJECT) depth++;
    else if (c === CLOSE_OBJECT) depth--;
    else if (c === CLOSE_ARRAY) {
      if (depth === 0) {
        const last = text.slice(start, i).trim();
        if (last !== "") yield last;
        return;
      }
      depth--;
    } else if (c === COMMA && depth === 0) {
      yield text.slice(start, i).trim();
      start = i + 1;
    }
    i++;
  }
}
