import { z } from "zod";

// SuperSim.ConnectionEvent v1/v2 (shared/reference/event-sources.md §4). Absent and null are
// treated alike for every optional field; only the six documented-required fields must be there.

export const CONNECTION_KINDS = [
  "attachment.accepted",
  "attachment.rejected",
  "attachment.failed",
  "data-session.started",
  "data-session.updated",
  "data-session.ended",
  "data-session.failed",
] as const;
export type ConnectionKind = (typeof CONNECTION_KINDS)[number];

export function isBillingKind(
  kind: ConnectionKind,
): kind is "data-session.updated" | "data-session.ended" {
  return kind === "data-session.updated" || kind === "data-session.ended";
}

const strictSid = (prefix: string) =>
  z
    .string()
    .regex(new RegExp(`^${prefix}[0-9a-fA-F]{32}$`), `must be ${prefix} followed by 32 hex digits`);
// event_sid and data_session_sid formats are only observed, not specified: accept any two-letter prefix.
const tolerantSid = z
  .string()
  .regex(/^[A-Z]{2}[0-9a-fA-F]{32}$/, "must be two capital letters and 32 hex digits");
// Date.parse alone accepts "12" or "0" (read in the server's zone); require a real ISO 8601 time
// with Z or an offset, as the captured events carry.
const isoTime = z.iso.datetime({
  offset: true,
  error: "must be an ISO 8601 UTC time with Z or an offset",
});
const bytes = z
  .number()
  .int("must be a whole number of bytes")
  .nonnegative("must not be negative")
  .max(Number.MAX_SAFE_INTEGER, "is too large to count exactly");

const opt = <T extends z.ZodType>(t: T) => t.nullish();

export const connectionEventDataSchema = z.object({
  event_sid: tolerantSid,
  event_type: z.string().min(1),
  account_sid: strictSid("AC"),
  sim_sid: strictSid("HS"),
  sim_iccid: z.string().regex(/^[0-9]{18,22}F?$/, "must be an ICCID of 18 to 22 digits"),
  timestamp: isoTime,
  fleet_sid: opt(strictSid("HF")),
  sim_unique_name: opt(z.string()),
  network: opt(
    z.object({
      mcc: opt(z.string()),
      mnc: opt(z.string()),
      sid: opt(strictSid("HW")),
      friendly_name: opt(z.string()),
      iso_country: opt(z.string()),
    }),
  ),
  location: opt(
    z.object({
      cell_id: opt(z.string()),
      lac: opt(z.string()),
      lat: opt(z.number()),
      lon: opt(z.number()),
    }),
  ),
  imei: opt(z.string()),
  imsi: opt(z.string()),
  ip_address: opt(z.string()),
  apn: opt(z.string()),
  rat_type: opt(z.string()),
  data_modifier: opt(z.string()),
  data_session_sid: opt(tolerantSid),
  data_session_start_time: opt(isoTime),
  data_session_end_time: opt(isoTime),
  data_session_update_start_time: opt(isoTime),
  data_session_update_end_time: opt(isoTime),
  data_download: opt(bytes),
  data_upload: opt(bytes),
  data_total: opt(bytes),
  data_session_data_download: opt(bytes),
  data_session_data_upload: opt(bytes),
  data_session_data_total: opt(bytes),
  error: opt(
    z.object({
      code: opt(z.union([z.number(), z.string()])),
      message: opt(z.string()),
    }),
  ),
});

export type ConnectionEventData = z.infer<typeof connectionEventDataSchema>;

/** What accounting and ingest need from one valid Super SIM event, times in epoch ms. */
export type ConnectionEvent = {
  eventSid: string;
  kind: ConnectionKind;
  schemaVersion: number | null;
  accountSid: string;
  simSid: string;
  iccid: string;
  fleetSid: string | null;
  timestampMs: number;
  sessionSid: string | null;
  sessionStartMs: number | null;
  /** the reading's time: update end (updated) or session end (ended) */
  readingMs: number | null;
  windowStartMs: number | null;
  windowTotal: number | null;
  cumulativeTotal: number | null;
};

export type Classified =
  | { kind: "test"; testId: string | null; type: string }
  | { kind: "event"; event: ConnectionEvent }
  | { kind: "invalid"; reason: string; eventSid: string | null };

const TEST_TYPE = /eventstreams\.test[-.]event$/;
const KIND_MARKER = "supersim.connection.";

/**
 * What a CloudEvent type string names: an Event Streams test event (Twilio or KORE), one of the
 * seven connection kinds (matched on the `supersim.connection.<kind>` suffix, so both prefixes
 * work), or something else. Cheap: no schema validation.
 */
export function kindOfType(type: string): "test" | ConnectionKind | null {
  if (TEST_TYPE.test(type)) return "test";
  const at = type.indexOf(KIND_MARKER);
  const kind = at >= 0 ? type.slice(at + KIND_MARKER.length) : "";
  return (CONNECTION_KINDS as readonly string[]).includes(kind) ? (kind as ConnectionKind) : null;
}

/** `data` as an object, parsing it when a sender JSON-encoded it as a string; null otherwise. */
export function dataObject(data: unknown): Record<string, unknown> | null | "unparsable" {
  let d = data;
  if (typeof d === "string") {
    // Older Twilio examples carry data as a JSON-encoded string.
    try {
      d = JSON.parse(d);
    } catch {
      return "unparsable";
    }
  }
  return d !== null && typeof d === "object" && !Array.isArray(d)
    ? (d as Record<string, unknown>)
    : null;
}

function ms(s: string | null | undefined): number | null {
  if (s === null || s === undefined) return null;
  return Date.parse(s);
}

function schemaVersionOf(dataschema: unknown): number | null {
  if (typeof dataschema !== "string") return null;
  const m = /SuperSim\.ConnectionEvent\/(\d+)/.exec(dataschema);
  return m?.[1] ? Number(m[1]) : null;
}

/** Turns one CloudEvent (Twilio or KORE envelope) into a typed event, a test event or a reason. */
export function classifyCloudEvent(raw: unknown): Classified {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return { kind: "invalid", reason: "event is not a JSON object", eventSid: null };
  }
  const ce = raw as Record<string, unknown>;
  const type = ce.type;
  const dataObj = dataObject(ce.data);
  if (dataObj === "unparsable") {
    return { kind: "invalid", reason: "data is a string that is not valid JSON", eventSid: null };
  }
  const sidGuess = typeof dataObj?.event_sid === "string" ? dataObj.event_sid.slice(0, 64) : null;
  if (typeof type !== "string" || type.length === 0) {
    return { kind: "invalid", reason: "CloudEvent type is missing", eventSid: sidGuess };
  }
  const kindOrTest = kindOfType(type);
  if (kindOrTest === "test") {
    const testId = typeof dataObj?.test_id === "string" ? dataObj.test_id : null;
    return { kind: "test", testId, type };
  }
  if (kindOrTest === null) {
    return {
      kind: "invalid",
      reason: `unknown event type ${JSON.stringify(type.slice(0, 200))}`,
      eventSid: sidGuess,
    };
  }
  const kind = kindOrTest;
  if (!dataObj) {
    return { kind: "invalid", reason: "data is missing or not an object", eventSid: null };
  }
  const parsed = connectionEventDataSchema.safeParse(dataObj);
  if (!parsed.success) {
    const first = parsed.error.issues
      .slice(0, 3)
      .map((i) => `data.${i.path.join(".")}: ${i.message}`)
      .join("; ");
    return { kind: "invalid", reason: `schema: ${first}`, eventSid: sidGuess };
  }
  const d = parsed.data;
  if (d.event_type !== type) {
    return {
      kind: "invalid",
      reason: `data.event_type ${JSON.stringify(d.event_type)} differs from CloudEvent type`,
      eventSid: d.event_sid,
    };
  }
  let readingMs: number | null = null;
  if (kind === "data-session.updated") readingMs = ms(d.data_session_update_end_time);
  if (kind === "data-session.ended") {
    readingMs = ms(d.data_session_end_time) ?? ms(d.data_session_update_end_time);
  }
  if (isBillingKind(kind)) {
    const missing: string[] = [];
    if (!d.data_session_sid) missing.push("data_session_sid");
    if (readingMs === null) {
      missing.push(
        kind === "data-session.ended" ? "data_session_end_time" : "data_session_update_end_time",
      );
    }
    const cumulative = d.data_session_data_total ?? null;
    const window = d.data_total ?? null;
    if (cumulative === null && window === null)
      missing.push("data_session_data_total or data_total");
    if (missing.length > 0) {
      return {
        kind: "invalid",
        reason: `${kind} without ${missing.join(", ")}`,
        eventSid: d.event_sid,
      };
    }
  }
  return {
    kind: "event",
    event: {
      eventSid: d.event_sid,
      kind,
      schemaVersion: schemaVersionOf(ce.dataschema),
      accountSid: d.account_sid,
      simSid: d.sim_sid,
      iccid: d.sim_iccid,
      fleetSid: d.fleet_sid ?? null,
      timestampMs: Date.parse(d.timestamp),
      sessionSid: d.data_session_sid ?? null,
      sessionStartMs: ms(d.data_session_start_time),
      readingMs,
      windowStartMs: ms(d.data_session_update_start_time),
      windowTotal: d.data_total ?? null,
      cumulativeTotal: d.data_session_data_total ?? null,
    },
  };
}

/** Splits a delivery body into CloudEvents: a JSON array or a single object. */
export function parseDeliveryBody(
  body: Buffer | string,
): { ok: true; events: unknown[] } | { ok: false; error: string } {
  let value: unknown;
  try {
    value = JSON.parse(typeof body === "string" ? body : body.toString("utf8"));
  } catch (e) {
    return { ok: false, error: `body is not valid JSON: ${(e as Error).message}` };
  }
  if (Array.isArray(value)) return { ok: true, events: value };
  if (value !== null && typeof value === "object") return { ok: true, events: [value] };
  return { ok: false, error: "body is neither a JSON array nor a JSON object" };
}
