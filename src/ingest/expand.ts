import { parseDeliveryBody } from "../events/schema.ts";
import type { Delivery, IngestJobData } from "./job.ts";

// Pure: a job's deliveries → the events in them, each with the delivery and position it came
// from (what identifies a quarantined event across re-runs of the job).

export const MAX_RAW_CHARS = 1_000_000;

export type Expanded =
  | { position: number; value: unknown }
  | { position: number; error: string; raw: string };

/** One event of a job and the delivery it came in. */
export type ExpandedItem = Expanded & { delivery: Delivery };

/**
 * The events of one delivery with their positions in what arrived. A body that is not JSON is one
 * item at position -1; a replayed line that is not JSON is an item at its own position.
 */
export function* expandDelivery(d: Delivery): Generator<Expanded> {
  if (d.body !== undefined) {
    const parsed = parseDeliveryBody(d.body);
    if (!parsed.ok) {
      yield { position: -1, error: parsed.error, raw: d.body.slice(0, MAX_RAW_CHARS) };
      return;
    }
    for (let i = 0; i < parsed.events.length; i++) yield { position: i, value: parsed.events[i] };
    return;
  }
  if (d.lines !== undefined) {
    for (let i = 0; i < d.lines.length; i++) {
      const line = d.lines[i] as string;
      try {
        yield { position: i, value: JSON.parse(line) };
      } catch (e) {
        yield {
          position: i,
          error: `line is not valid JSON: ${(e as Error).message}`,
          raw: line.slice(0, MAX_RAW_CHARS),
        };
      }
    }
    return;
  }
  const events = d.events ?? [];
  for (let i = 0; i < events.length; i++) yield { position: i, value: events[i] };
}

/** Every event of the job, in delivery order then position order. */
export function expandJob(job: IngestJobData | readonly Delivery[]): ExpandedItem[] {
  const deliveries = "deliveries" in job ? job.deliveries : job;
  const items: ExpandedItem[] = [];
  for (const delivery of deliveries) {
    for (const item of expandDelivery(delivery)) {
      (item as ExpandedItem).delivery = delivery;
      items.push(item as ExpandedItem);
    }
  }
  return items;
}

/** The event as JSON text, or null when it cannot be re-serialised (e.g. nested thousands deep). */
export function rawOf(value: unknown): string | null {
  try {
    const s = JSON.stringify(value) ?? String(value);
    return s.length > MAX_RAW_CHARS ? `${s.slice(0, MAX_RAW_CHARS)}…(truncated)` : s;
  } catch {
    return null;
  }
}
