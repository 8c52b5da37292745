import { z } from "zod";

// SuperSim.ConnectionEvent v1/v2 (shared/reference/event-sources.md §4). Absent and null are
// treated alike for every optional field; only the six documented-required fields must be there.
// Billing fields are strict (a bad one quarantines the event); descriptive fields are tolerant (a
// bad one is read as null and reported in ConnectionEvent.oddities).

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

/**
 * The fields billing depends on: who (account, SIM, ICCID), which event (sid, type, time) and the
 * session's times and byte counters. An event whose billing fields are wrong is quarantined.
 */
export const connectionEventDataSchema = z.object({
  event_sid: tolerantSid,
  event_type: z.string().min(1),
  account_sid: strictSid("AC"),
  sim_sid: strictSid("HS"),
  sim_iccid: z.string().regex(/^[0-9]{18,22}F?$/, "must be an ICCID of 18 to 22 digits"),
  timestamp: isoTime,
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
});

// Descriptive fields: none of them changes a byte of the bill, so an odd value is not worth losing
// the event for. It becomes null and is described in ConnectionEvent.oddities instead.
type Expect = "string" | "number" | "number or string" | "network sid";
const DESCRIPTIVE_LEAVES = {
  sim_unique_name: "string",
  imei: "string",
  imsi: "string",
  ip_address: "string",
  apn: "string",
  rat_type: "string",
  data_modifier: "string",
} as const satisfies Record<string, Expect>;
const DESCRIPTIVE_OBJECTS = {
  network: {
    mcc: "string",
    mnc: "string",
    sid: "network sid",
    friendly_name: "string",
    iso_country: "string",
  },
  location: { cell_id: "string", lac: "string", lat: "number", lon: "number" },
  error: { code: "number or string", message: "string" },
} as const satisfies Record<string, Record<string, Expect>>;

type ValueOf<E> = E extends "number"
  ? number
  : E extends "number or string"
    ? number | string
    : string;
type Shape<O> = { -readonly [F in keyof O]: ValueOf<O[F]> | null } | null;
type Leaves = { -readonly [K in keyof typeof DESCRIPTIVE_LEAVES]: string | null };
type Objects = {
  -readonly [K in keyof typeof DESCRIPTIVE_OBJECTS]: Shape<(typeof DESCRIPTIVE_OBJECTS)[K]>;
};
/** The descriptive fields as ConnectionEventData carries them: valid, or null. */
export type DescriptiveData = Leaves & Objects & { fleet_sid: string | null };

const FLEET_SID = /^HF[0-9a-fA-F]{32}$/;
const NETWORK_SID = /^HW[0-9a-fA-F]{32}$/;

/** The JSON type of a value, as an oddity names it. */
function jsonType(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number" && !Number.isFinite(v)) return "a number out of range";
  return typeof v;
}

const shown = (v: string) => JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);

/** One descriptive value: itself when valid; null, with an oddity, otherwise. */
function leaf(path: string, v: unknown, expect: Expect, oddities: string[]): unknown {
  if (v === null || v === undefined) return null;
  const isString = typeof v === "string";
  const isNumber = typeof v === "number" && Number.isFinite(v);
  if (expect === "string" && isString) return v;
  if (expect === "number" && isNumber) return v;
  if (expect === "number or string" && (isString || isNumber)) return v;
  if (expect === "network sid" && isString) {
    if (NETWORK_SID.test(v)) return v;
    oddities.push(`${path}: ${shown(v)} is not HW followed by 32 hex digits`);
    return null;
  }
  const wanted = expect === "network sid" ? "string" : expect;
  oddities.push(`${path}: expected ${wanted}, got ${jsonType(v)}`);
  return null;
}

/** The descriptive fields of `data`, each valid or null, and a sentence per odd value. */
export function readDescriptive(data: Record<string, unknown>): {
  fields: DescriptiveData;
  oddities: string[];
} {
  const oddities: string[] = [];
  const fields: Record<string, unknown> = {};
  const fleet = data.fleet_sid;
  fields.fleet_sid = null;
  if (typeof fleet === "string") {
    if (fleet === "") oddities.push("data.fleet_sid: empty string treated as no fleet");
    else if (FLEET_SID.test(fleet)) fields.fleet_sid = fleet;
    else {
      oddities.push(
        `data.fleet_sid: ${shown(fleet)} is not HF followed by 32 hex digits, treated as no fleet`,
      );
    }
  } else if (fleet !== null && fleet !== undefined) {
    oddities.push(`data.fleet_sid: expected string, got ${jsonType(fleet)}, treated as no fleet`);
  }
  for (const [key, expect] of Object.entries(DESCRIPTIVE_LEAVES)) {
    fields[key] = leaf(`data.${key}`, data[key], expect, oddities);
  }
  for (const [key, shape] of Object.entries(DESCRIPTIVE_OBJECTS)) {
    const v = data[key];
    if (v === null || v === undefined) {
      fields[key] = null;
    } else if (typeof v !== "object" || Array.isArray(v)) {
      oddities.push(`data.${key}: expected object, got ${jsonType(v)}`);
      fields[key] = null;
    } else {
      const o: Record<string, unknown> = {};
      for (const [f, expect] of Object.entries(shape) as [string, Expect][]) {
        o[f] = leaf(`data.${key}.${f}`, (v as Record<string, unknown>)[f], expect, oddities);
      }
      fields[key] = o;
    }
  }
  return { fields: fields as DescriptiveData, oddities };
}

export type ConnectionEventData = z.infer<typeof connectionEventDataSchema> & DescriptiveData;

/** What accounting and ingest need from one valid Super SIM event, times in epoch ms. */
export type ConnectionEvent = {
  eventSid: string;
  kind: ConnectionKind;
  schemaVersion: number | null;
  accountSid: string;
  simSid: string;
  iccid: string;
  /** null when absent or odd (see oddities) */
  fleetSid: string | null;
  /** data.sim_unique_name, null when absent or odd */
  simUniqueName: string | null;
  timestampMs: number;
  sessionSid: string | null;
  sessionStartMs: number | null;
  /** the reading's time: update end (updated) or session end (ended) */
  readingMs: number | null;
  windowStartMs: number | null;
  windowTotal: number | null;
  cumulativeTotal: number | null;
  /**
   * One sentence per descriptive field (fleet, name, network, location, device ids, error…) whose
   * value was odd and was read as null, e.g. `data.location.lat: expected number, got string`.
   * Billing fields are never odd: a bad one quarantines the event. Always present, [] when none.
   */
  oddities: string[];
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
  // KORE's envelope keeps Twilio's data unchanged (data.event_type may still read com.twilio.…):
  // the kind, the `supersim.connection.<kind>` suffix, must agree; the prefix may differ.
  if (d.event_type !== type && kindOfType(d.event_type) !== kind) {
    return {
      kind: "invalid",
      reason: `data.event_type ${JSON.stringify(d.event_type.slice(0, 200))} differs from CloudEvent type ${JSON.stringify(type.slice(0, 200))} in kind, not only in prefix`,
      eventSid: d.event_sid,
    };
  }
  const descriptive = readDescriptive(dataObj);
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
      fleetSid: descriptive.fields.fleet_sid,
      simUniqueName: descriptive.fields.sim_unique_name,
      timestampMs: Date.parse(d.timestamp),
      sessionSid: d.data_session_sid ?? null,
      sessionStartMs: ms(d.data_session_start_time),
      readingMs,
      windowStartMs: ms(d.data_session_update_start_time),
      windowTotal: d.data_total ?? null,
      cumulativeTotal: d.data_session_data_total ?? null,
      oddities: descriptive.oddities,
    },
  };
}

/**
 * The text without a leading UTF-8 byte order mark, which JSON.parse refuses. Only for parsing:
 * signatures cover the bytes as sent, BOM included.
 */
export function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Splits a delivery body into CloudEvents: a JSON array or a single object (a BOM is ignored). */
export function parseDeliveryBody(
  body: Buffer | string,
): { ok: true; events: unknown[] } | { ok: false; error: string } {
  let value: unknown;
  try {
    value = JSON.parse(withoutBom(typeof body === "string" ? body : body.toString("utf8")));
  } catch (e) {
    return { ok: false, error: `body is not valid JSON: ${(e as Error).message}` };
  }
  if (Array.isArray(value)) return { ok: true, events: value };
  if (value !== null && typeof value === "object") return { ok: true, events: [value] };
  return { ok: false, error: "body is neither a JSON array nor a JSON object" };
}
