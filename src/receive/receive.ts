import { randomUUID } from "node:crypto";
import type { Config } from "../config.ts";
import { dataObject, kindOfType, parseDeliveryBody } from "../events/schema.ts";
import type { Delivery } from "../ingest/job.ts";
import { type AuthInput, authenticate } from "./authenticate.ts";

/** Who sent a delivery (the `source` label): the signature it carried, or unknown. */
export type Sender = "twilio" | "kore" | "unsigned" | "unknown";

export type ReceiveOutcome =
  /** 200: the delivery (or its quarantine record) is durably in Redis */
  (
    | {
        kind: "accepted";
        deliveryId: string;
        events: number;
        testIds: string[];
        types: string[];
        unparsable: boolean;
      }
    /** 200: only Event Streams test events; nothing to bill, nothing enqueued */
    | { kind: "test"; testIds: string[] }
    /** 401: no acceptable credentials */
    | { kind: "unauthenticated"; reason: string }
    /** 403: credentials present but invalid */
    | { kind: "forbidden"; reason: string }
    /** 503: Redis unavailable; the sender retries */
    | { kind: "unavailable"; reason: string }
  ) & { source: Sender };

export type ReceiveDeps = {
  config: Pick<
    Config,
    "PUBLIC_URL" | "TWILIO_AUTH_TOKEN" | "KORE_WEBHOOK_SECRET" | "BASIC_AUTH" | "ALLOW_UNSIGNED"
  >;
  enqueue: (d: Delivery, events: number) => Promise<void>;
  now: () => number;
};

function typeLabel(e: unknown): { label: string; testId?: string | null } {
  if (e === null || typeof e !== "object") return { label: "invalid" };
  const t = (e as { type?: unknown }).type;
  if (typeof t !== "string") return { label: "invalid" };
  // Labels come from a fixed set: a sender-chosen type must not grow the metrics registry.
  const kind = kindOfType(t);
  if (kind !== "test") return { label: kind ?? "other" };
  const data = dataObject((e as { data?: unknown }).data);
  const id = data && data !== "unparsable" ? data.test_id : null;
  return { label: "test", testId: typeof id === "string" ? id : null };
}

/** The webhook: authenticate, split, enqueue, answer. Nothing else happens on this path. */
export async function receiveDelivery(
  input: AuthInput,
  deps: ReceiveDeps,
): Promise<ReceiveOutcome> {
  const auth = authenticate(input, deps.config);
  if (!auth.ok) {
    return auth.status === 401
      ? { kind: "unauthenticated", reason: auth.reason, source: auth.claimed }
      : { kind: "forbidden", reason: auth.reason, source: auth.claimed };
  }
  const source = auth.source;
  const delivery: Delivery = { id: randomUUID(), receivedAt: deps.now(), source: auth.source };
  const testIds: string[] = [];
  const types: string[] = [];
  let events = 0;
  let unparsable = false;
  const text = input.rawBody.toString("utf8");
  const parsed = parseDeliveryBody(text);
  if (parsed.ok) {
    for (const e of parsed.events) {
      const t = typeLabel(e);
      types.push(t.label);
      if (t.label === "test") testIds.push(t.testId ?? "(none)");
      else events++;
    }
    if (events === 0 && testIds.length > 0) return { kind: "test", testIds, source };
  } else {
    // Authenticated but unreadable: keep it (the sender never retries a 4xx) and answer 2xx.
    unparsable = true;
  }
  // The worker parses the text that arrived: re-serialising parsed values would turn 1e400 into
  // null and throw on deep nesting.
  delivery.body = text;
  try {
    await deps.enqueue(delivery, events);
  } catch (err) {
    return { kind: "unavailable", reason: (err as Error).message, source };
  }
  return {
    kind: "accepted",
    deliveryId: delivery.id,
    events,
    testIds,
    types,
    unparsable,
    source,
  };
}
