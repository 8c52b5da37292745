import { type JobsOptions, Queue } from "bullmq";
import type { Redis } from "ioredis";
import { INGEST_JOB, INGEST_QUEUE, type IngestJobData } from "./job.ts";

// A failed ingest is an infrastructure problem (bad input is quarantined, never thrown), so the
// job retries for about an hour before it parks in the failed set, where nothing is lost.
export const INGEST_JOB_OPTIONS: JobsOptions = {
  attempts: 1800,
  backoff: { type: "fixed", delay: 2000 },
  removeOnComplete: true,
  removeOnFail: { count: 100_000 },
};

export function createIngestQueue(connection: Redis, prefix: string): Queue<IngestJobData> {
  return new Queue<IngestJobData>(INGEST_QUEUE, { connection, prefix });
}

export async function addDeliveries(
  queue: Queue<IngestJobData>,
  data: IngestJobData,
): Promise<void> {
  await queue.add(INGEST_JOB, data, INGEST_JOB_OPTIONS);
}
