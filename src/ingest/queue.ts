import { type JobsOptions, Queue } from "bullmq";
import type { Redis } from "ioredis";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import { createLogger, type Logger } from "../lib/logger.ts";
import { INGEST_JOB, INGEST_QUEUE, type IngestJobData } from "./job.ts";

// A failed ingest is an infrastructure problem (bad input is quarantined, never thrown), so the
// job retries for about an hour before it parks in the failed set, where nothing is lost.
export const INGEST_JOB_OPTIONS: JobsOptions = {
  attempts: 1800,
  backoff: { type: "fixed", delay: 2000 },
  removeOnComplete: true,
  removeOnFail: { count: 100_000 },
};

/** The ingest queue, its errors logged as JSON (by `logger`, or a warn-level one). */
export function createIngestQueue(
  connection: Redis,
  prefix: string,
  logger: Logger = createLogger("warn"),
): Queue<IngestJobData> {
  const queue = new Queue<IngestJobData>(INGEST_QUEUE, { connection, prefix });
  logBullmqErrors(queue, logger, "ingest queue");
  return queue;
}

export async function addDeliveries(
  queue: Queue<IngestJobData>,
  data: IngestJobData,
): Promise<void> {
  await queue.add(INGEST_JOB, data, INGEST_JOB_OPTIONS);
}
