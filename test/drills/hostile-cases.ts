import { createHash, createHmac } from "node:crypto";
import fc from "fast-check";
import { signKore } from "../../src/receive/kore-signature.ts";
import { signTwilio } from "../../src/receive/twilio-signature.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";

// Hostile deliveries for the drill: a seeded fast-check generator of specs (plain data), turned
// into signed (or deliberately mis-signed) HTTP requests, each with the answer and the number of
// quarantine rows it must produce. Every expectation is worked out here from the documented
// schema (shared/reference/event-sources.md, src/events/schema.ts's documented rules), never by
// calling the code under test.
//
// The rule: billing fields (envelope type and data, event/account/SIM ids, ICCID, timestamp,
// session id, times and byte counters, and what a billing event cannot do without) are strict: a
// bad one quarantines the event, which is never counted. Descriptive fields (fleet_sid,
// sim_unique_name, imei, imsi, ip_address, apn, rat_type, data_modifier, network, location, error
// and their members) are lenient: an odd one does not cost the bill, so the event is counted (its
// 5,120 bytes billed to HOSTILE_SIM) and one odd_field anomaly describes it.

export const TOKEN = "hostile-drill-token-0123456789abc";
export const KORE_SECRET = "hostile-drill-kore-secret";
export const PUBLIC_URL = "https://billing.example.com/webhooks/event-streams";
export const WEBHOOK = "/webhooks/event-streams";
/** Every event made up here belongs to this SIM: any byte it is billed shows in usage. */
export const HOSTILE_SIM = `HS${"f".repeat(32)}`;
/** Made-up events carry event_sid QQ…: any of them in seen_events was counted. */
export const HOSTILE_SID_PREFIX = "QQ";
const ACCOUNT = `AC${"1".repeat(32)}`;
const HOSTILE_FLEET = `HF${"2".repeat(32)}`;
const DEEP = 5000;

/** a quarantine row a delivery must produce: its position (-1: whole body) and why */
export type Quarantined = { pos: number; label: string };
/**
 * a made-up event whose only faults are odd descriptive fields: it must be counted, with an
 * odd_field anomaly naming each of `fields` (e.g. "data.location.lat")
 */
export type OddCounted = { sid: string; label: string; fields: string[] };

/** What every made-up event that is counted adds to HOSTILE_SIM's usage (4,096 down + 1,024 up). */
export const HOSTILE_EVENT_BYTES = 5120;
/** The hour those bytes belong to (every made-up session ends at 03:20 on 6 January 2025). */
export const HOSTILE_HOUR = "2025-01-06T03:00:00.000Z";

export type Expect =
  /** authenticated and stored: `accepted` events in the answer, one quarantine row per entry */
  | {
      status: 200;
      accepted: number;
      quarantine: Quarantined[];
      /** made-up events that must be counted despite odd descriptive fields */
      counted: OddCounted[];
      /** also right: the whole body kept as one row at position -1 (and 0 events accepted) */
      orWhole?: boolean;
    }
  /** authenticated, only Event Streams test events: nothing stored */
  | { status: 200; test: true }
  | { status: 401 | 403 };

export type HostileRequest = {
  kind: string;
  detail: string;
  /** "" or "?…" appended to the webhook path */
  query: string;
  headers: Record<string, string>;
  body: Buffer;
  expect: Expect;
};

type Auth = "twilio" | "kore";
/** one edit of an event: JSON text at a path; null deletes the key; path [] replaces the event */
type Edit = { path: string[]; raw: string | null };
type Mutation = { ended: boolean; label: string; edits: Edit[] };

/** The descriptive fields of data (src/events/schema.ts): odd values there are not quarantined. */
const DESCRIPTIVE = new Set([
  "fleet_sid",
  "sim_unique_name",
  "imei",
  "imsi",
  "ip_address",
  "apn",
  "rat_type",
  "data_modifier",
  "network",
  "location",
  "error",
]);
const isDescriptive = (path: readonly string[]) =>
  path.length >= 2 && path[0] === "data" && DESCRIPTIVE.has(path[1] as string);
/**
 * A mutation that only touches descriptive fields leaves a billable event: counted, with an
 * oddity. (Every descriptive value in FIELDS below is odd: of the wrong type, or a malformed SID.)
 */
const onlyDescriptive = (m: Mutation) =>
  m.edits.length > 0 && m.edits.every((e) => e.raw !== null && isDescriptive(e.path));

const DELETE = null;
const q = (s: string) => JSON.stringify(s);
const DATA_AS_INVALID_JSON_STRING = "@data-as-json-string-of-invalid-data";

// Values of the wrong JSON type for a string field. 1e400 parses to Infinity; -0 and numbers
// beyond 2^53 are still numbers: none of them is a string.
const NOT_STRING = [
  "123",
  "-0",
  "1.5",
  "true",
  "false",
  "{}",
  "[]",
  '["x"]',
  '{"a":"b"}',
  "1e400",
  "-1e400",
  "99999999999999999999",
];
// Not ISO 8601: Date.parse gives NaN for some, a local-time guess for others ("12", "0").
const BAD_TIMES = [
  q("not a time"),
  q(""),
  q("yesterday"),
  q("1736132400"),
  q("2025-13-45T99:99:99Z"),
  q("12"),
  q("0"),
];
const badSids = (p: string) => [
  q(`${p}123`),
  q(`${p.toLowerCase()}${"a".repeat(32)}`),
  q(`${p}${"g".repeat(32)}`),
  q(`${p}${"a".repeat(33)}`),
  q(""),
];
// Bytes must be whole, non-negative and at most 2^53-1. Numbers as strings, NaN-ish strings,
// negatives, fractions, 2^53, 2^64, 1e20, ±1e400 (Infinity), other types.
const BAD_BYTES = [
  q("123"),
  q("NaN"),
  q("Infinity"),
  q("-1"),
  q("0x10"),
  q(""),
  "-1",
  "-0.5",
  "1.5",
  "0.000001",
  "9007199254740992",
  "18446744073709551616",
  "99999999999999999999",
  "1e20",
  "1e400",
  "-1e400",
  "true",
  "{}",
  "[]",
  "[1]",
];
const NOT_OBJECT = [q("str"), "5", "true", "[]", "[{}]", "1e400"];
const BAD_TYPES = [
  DELETE,
  "null",
  "5",
  q(""),
  q("com.twilio.iot.supersim.connection.data-session.exploded"),
  q("com.twilio.iot.supersim.connection."),
  q("COM.TWILIO.IOT.SUPERSIM.CONNECTION.DATA-SESSION.ENDED"),
  q("com.twilio.iot.supersim.connection.data-session.ended "),
  // a real kind that differs from data.event_type
  q("com.twilio.iot.supersim.connection.data-session.started"),
  "{}",
  "[]",
  '"\\ud800"',
  '"\\u0000"',
  "1e400",
];

type Field = { path: string[]; values: (string | null)[] };
const d = (...p: string[]) => ["data", ...p];
const FIELDS: Field[] = [
  { path: [], values: ["5", "null", q("event"), "[]", "true", "1e400", "[{}]"] },
  { path: ["type"], values: BAD_TYPES },
  {
    path: ["data"],
    values: [
      "5",
      "null",
      "[]",
      "true",
      "1e400",
      q(""),
      q("not json"),
      q('{"event_sid":'),
      DATA_AS_INVALID_JSON_STRING,
    ],
  },
  {
    path: d("event_sid"),
    values: [...NOT_STRING, ...badSids("EZ"), q(`E1${"a".repeat(32)}`), "null", DELETE],
  },
  {
    path: d("event_type"),
    values: [
      ...NOT_STRING,
      q(""),
      "null",
      DELETE,
      q("com.twilio.iot.supersim.connection.data-session.started"),
    ],
  },
  { path: d("account_sid"), values: [...NOT_STRING, ...badSids("AC"), "null", DELETE] },
  { path: d("sim_sid"), values: [...NOT_STRING, ...badSids("HS"), "null", DELETE] },
  {
    path: d("sim_iccid"),
    values: [
      ...NOT_STRING,
      "89883070000005381783",
      q("8988"),
      q("8988307000000538178X"),
      q("89883070000005381783FF"),
      q(""),
      "null",
      DELETE,
    ],
  },
  { path: d("timestamp"), values: [...NOT_STRING, ...BAD_TIMES, "null", DELETE] },
  { path: d("fleet_sid"), values: [...NOT_STRING, ...badSids("HF")] },
  ...["sim_unique_name", "imei", "imsi", "ip_address", "apn", "rat_type", "data_modifier"].map(
    (f) => ({ path: d(f), values: NOT_STRING }),
  ),
  { path: d("network"), values: NOT_OBJECT },
  ...["mcc", "mnc", "friendly_name", "iso_country"].map((f) => ({
    path: d("network", f),
    values: NOT_STRING,
  })),
  { path: d("network", "sid"), values: [...NOT_STRING, ...badSids("HW")] },
  { path: d("location"), values: NOT_OBJECT },
  ...["lat", "lon"].map((f) => ({
    path: d("location", f),
    values: [q("1.5"), q("NaN"), "true", "{}", "[]", "1e400"],
  })),
  { path: d("error"), values: NOT_OBJECT },
  { path: d("error", "code"), values: ["true", "{}", "[]", "1e400"] },
  { path: d("error", "message"), values: NOT_STRING },
  { path: d("data_session_sid"), values: [...NOT_STRING, ...badSids("PI")] },
  ...[
    "data_session_start_time",
    "data_session_end_time",
    "data_session_update_start_time",
    "data_session_update_end_time",
  ].map((f) => ({ path: d(f), values: [...NOT_STRING, ...BAD_TIMES] })),
  ...[
    "data_download",
    "data_upload",
    "data_total",
    "data_session_data_download",
    "data_session_data_upload",
    "data_session_data_total",
  ].map((f) => ({ path: d(f), values: BAD_BYTES })),
];

/** What a billing event cannot do without (src/events/schema.ts, classifyCloudEvent). */
function requirementEdits(ended: boolean): { label: string; edits: Edit[] }[] {
  const both = (raw: string | null) => [
    { path: d("data_total"), raw },
    { path: d("data_session_data_total"), raw },
  ];
  const reading = ended
    ? [
        { path: d("data_session_end_time"), raw: DELETE },
        { path: d("data_session_update_end_time"), raw: DELETE },
      ]
    : [{ path: d("data_session_update_end_time"), raw: DELETE }];
  return [
    { label: "no data_session_sid", edits: [{ path: d("data_session_sid"), raw: DELETE }] },
    { label: "null data_session_sid", edits: [{ path: d("data_session_sid"), raw: "null" }] },
    { label: "no byte totals", edits: both(DELETE) },
    { label: "null byte totals", edits: both("null") },
    { label: "no reading time", edits: reading },
  ];
}

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc
      .record({ ended: fc.boolean(), f: fc.nat(), v: fc.nat() })
      .map(({ ended, f, v }) => {
        const field = FIELDS[f % FIELDS.length] as Field;
        const raw = field.values[v % field.values.length] ?? DELETE;
        const where = field.path.length === 0 ? "(event)" : field.path.join(".");
        return {
          ended,
          label: `${where}=${raw ?? "(deleted)"}`,
          edits: [{ path: field.path, raw }],
        };
      }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ ended: fc.boolean(), r: fc.nat() }).map(({ ended, r }) => {
      const list = requirementEdits(ended);
      const pick = list[r % list.length] as { label: string; edits: Edit[] };
      return { ended, ...pick };
    }),
  },
);

const TEST_TYPE = /eventstreams\.test[-.]event$/;
const KINDS = [
  "attachment.accepted",
  "attachment.rejected",
  "attachment.failed",
  "data-session.started",
  "data-session.updated",
  "data-session.ended",
  "data-session.failed",
];
/** A CloudEvent type that is neither a test event nor a Super SIM connection kind. */
const unknownTypeArb = fc.string({ unit: "binary", maxLength: 60 }).filter((s) => {
  if (s.length === 0 || TEST_TYPE.test(s)) return false;
  const at = s.indexOf("supersim.connection.");
  return at === -1 || !KINDS.includes(s.slice(at + "supersim.connection.".length));
});

const UNAUTH = [
  "no-signature",
  "twilio-wrong-token",
  "twilio-altered-body",
  "twilio-altered-body-rehashed",
  "twilio-no-bodySHA256",
  "twilio-no-bodySHA256-other-query",
  "twilio-uppercase-bodySHA256",
  "twilio-garbage-signature",
  "twilio-empty-signature",
  "twilio-signature-of-another-body",
  "twilio-signature-header-twice",
  "kore-altered-body",
  "kore-empty-signature",
  "kore-wrong-secret",
  "kore-garbage-signature",
  "kore-valid-but-garbage-twilio-signature",
] as const;
type UnauthHow = (typeof UNAUTH)[number];

const INVALID_UTF8 = [
  [0xff],
  [0xfe, 0xff],
  [0xc3, 0x28],
  [0xe2, 0x82],
  [0xf0, 0x28, 0x8c, 0x28],
  [0xc0, 0xaf],
  [0xed, 0xa0, 0x80],
  [0x80],
];

type Spec =
  | { t: "fleet"; auth: Auth; resend: boolean }
  | { t: "copy"; auth: Auth; idx: number; how: "data-as-string" | "envelope"; f: number; v: number }
  | { t: "malformed"; auth: Auth; text: string }
  | { t: "truncated"; auth: Auth; idx: number; cut: number }
  | { t: "scalar"; auth: Auth; text: string }
  | { t: "mutated"; auth: Auth; bare: boolean; muts: Mutation[] }
  | { t: "unknown-type"; auth: Auth; types: string[] }
  | {
      t: "deep";
      auth: Auth;
      shape: "array" | "object" | "in-event" | "beside-real-event";
      idx: number;
    }
  | { t: "tiny"; auth: Auth; unit: string; tests: number }
  | { t: "test"; auth: Auth; n: number; variant: number; junk: Mutation[] }
  | { t: "non-utf8"; auth: Auth; how: "raw"; bytes: number[] }
  | { t: "non-utf8"; auth: Auth; how: "in-type"; seqs: number[] }
  | { t: "container"; auth: Auth; text: string }
  | { t: "mixed"; auth: Auth; idxs: number[]; muts: Mutation[] }
  | { t: "unauth"; how: UnauthHow; baits: number; flip: number; xor: number };

const auth = fc.constantFrom<Auth>("twilio", "kore");
const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });

const specArb: fc.Arbitrary<Spec> = fc.oneof(
  w(150, fc.record({ t: fc.constant("fleet" as const), auth, resend: fc.boolean() })),
  w(
    60,
    fc.record({
      t: fc.constant("copy" as const),
      auth,
      idx: fc.nat(),
      how: fc.constantFrom("data-as-string" as const, "envelope" as const),
      f: fc.nat(),
      v: fc.nat(),
    }),
  ),
  w(
    50,
    fc
      .record({
        t: fc.constant("malformed" as const),
        auth,
        text: fc.oneof(
          fc.string({ unit: "binary", maxLength: 200 }),
          fc.constantFrom(
            "{'type':'x'}",
            "[1,]",
            '{"a":1,}',
            "NaN",
            "Infinity",
            "undefined",
            '"unterminated',
            "[",
            "{",
            "]",
            '{"type":"com.twilio.iot.supersim.connection.data-session.ended"',
            "[]]",
            "{}{}",
            "[] x",
            "--1",
            "01",
            "1.",
            ".5",
            "+1",
            "0x10",
            '"\\x41"',
            "[\u0000]",
            "\u0000",
          ),
        ),
      })
      // A leading UTF-8 BOM is ignored for parsing, so BOM + JSON is not malformed ("container").
      .filter((s) => !isJson(s.text) && !isJson(s.text.replace(/^\uFEFF/, ""))),
  ),
  w(
    30,
    fc.record({
      t: fc.constant("truncated" as const),
      auth,
      idx: fc.nat(),
      cut: fc.double({ min: 0, max: 0.999, noNaN: true }),
    }),
  ),
  w(
    40,
    fc.record({
      t: fc.constant("scalar" as const),
      auth,
      text: fc.oneof(
        fc.constantFrom(
          "null",
          " null ",
          "true",
          "false",
          "0",
          "-0",
          "1e400",
          "-1e400",
          "99999999999999999999999",
          "9007199254740993",
          '"a string"',
          '""',
          '"[1,2]"',
          '"\\ud800"',
          "",
          " ",
          "\n\t\r ",
        ),
        fc
          .jsonValue()
          .filter((v) => v === null || typeof v !== "object")
          .map((v) => JSON.stringify(v)),
      ),
    }),
  ),
  w(
    250,
    fc.record({
      t: fc.constant("mutated" as const),
      auth,
      bare: fc.boolean(),
      muts: fc.array(mutationArb, { minLength: 1, maxLength: 5 }),
    }),
  ),
  w(
    40,
    fc.record({
      t: fc.constant("unknown-type" as const),
      auth,
      types: fc.array(unknownTypeArb, { minLength: 1, maxLength: 4 }),
    }),
  ),
  w(
    5,
    fc.record({
      t: fc.constant("deep" as const),
      auth,
      shape: fc.constantFrom(
        "array" as const,
        "object" as const,
        "in-event" as const,
        "beside-real-event" as const,
      ),
      idx: fc.nat(),
    }),
  ),
  w(
    5,
    fc.record({
      t: fc.constant("tiny" as const),
      auth,
      unit: fc.constantFrom("0", "{}", "null", "[]", '""', "1e400", '{"type":5}', '{"data":{}}'),
      tests: fc.integer({ min: 0, max: 3 }),
    }),
  ),
  w(
    30,
    fc.record({
      t: fc.constant("test" as const),
      auth,
      n: fc.integer({ min: 1, max: 3 }),
      variant: fc.nat(),
      junk: fc.array(mutationArb, { maxLength: 2 }),
    }),
  ),
  w(
    40,
    fc.oneof(
      fc.record({
        t: fc.constant("non-utf8" as const),
        auth,
        how: fc.constant("raw" as const),
        bytes: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 300 }),
      }),
      fc.record({
        t: fc.constant("non-utf8" as const),
        auth,
        how: fc.constant("in-type" as const),
        seqs: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }),
      }),
    ),
  ),
  w(
    10,
    fc.record({
      t: fc.constant("container" as const),
      auth,
      text: fc.constantFrom(
        "[]",
        "{}",
        "[{}]",
        " [ ] ",
        '{"__proto__":{"type":"x"}}',
        "\uFEFF[]",
        "\uFEFF[{}]",
      ),
    }),
  ),
  w(
    50,
    fc.record({
      t: fc.constant("mixed" as const),
      auth,
      idxs: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }),
      muts: fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
    }),
  ),
  w(
    170,
    fc.record({
      t: fc.constant("unauth" as const),
      how: fc.constantFrom(...UNAUTH),
      baits: fc.integer({ min: 1, max: 3 }),
      flip: fc.nat(),
      xor: fc.integer({ min: 1, max: 255 }),
    }),
  ),
);

function isJson(s: string): boolean {
  try {
    JSON.parse(s);
    return true;
  } catch {
    return false;
  }
}

const sha256Hex = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const hmacSha1 = (token: string, url: string) =>
  createHmac("sha1", token).update(Buffer.from(url, "utf8")).digest("base64");

function signed(a: Auth, body: Buffer): { query: string; headers: Record<string, string> } {
  if (a === "twilio") {
    const s = signTwilio(TOKEN, PUBLIC_URL, body);
    return {
      query: s.url.slice(s.url.indexOf("?")),
      headers: { "content-type": "application/json", "x-twilio-signature": s.signature },
    };
  }
  return {
    query: "",
    headers: {
      "content-type": "application/json",
      "kore-signature": signKore(KORE_SECRET, "POST", PUBLIC_URL, body),
      "kore-idempotency-token": sha256Hex(body).slice(0, 16),
      "user-agent": "KoreProxy/1.1",
    },
  };
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (const key of path.slice(0, -1)) {
    const next = o[key];
    if (next === null || typeof next !== "object" || Array.isArray(next)) o[key] = {};
    o = o[key] as Record<string, unknown>;
  }
  const last = path[path.length - 1] as string;
  if (value === undefined) delete o[last];
  else o[last] = value;
}

const MARK = "\u0000raw-value\u0000";

/** A fully valid billing event of HOSTILE_SIM, every optional field present. */
function hostileEvent(sid: string, ended: boolean): Record<string, unknown> {
  const start = Date.UTC(2025, 0, 6, 3, 0, 0);
  const end = start + 20 * 60_000;
  const ev = buildCloudEvent({
    eventSid: sid,
    kind: ended ? "data-session.ended" : "data-session.updated",
    accountSid: ACCOUNT,
    simSid: HOSTILE_SIM,
    iccid: "89883070000005381783",
    fleetSid: HOSTILE_FLEET,
    timestampMs: end,
    sessionSid: `PI${sid.slice(2)}`,
    sessionStartMs: start,
    ...(ended ? { sessionEndMs: end } : {}),
    windowStartMs: start,
    windowEndMs: end,
    windowDown: 4096,
    windowUp: 1024,
    cumulativeDown: 4096,
    cumulativeUp: 1024,
    error: { code: 0, message: "none" },
  });
  const data = ev.data as Record<string, unknown>;
  Object.assign(data, {
    sim_unique_name: "hostile",
    imei: "490154203237518",
    imsi: "310260000000000",
    ip_address: "10.0.0.1",
    data_modifier: "none",
    location: { cell_id: "1", lac: "2", lat: 1.5, lon: -2.5 },
  });
  if (!ended) data.data_session_end_time = undefined;
  return JSON.parse(JSON.stringify(ev));
}

/** JSON text of a hostile event with one mutation applied (raw JSON text spliced in). */
function mutatedText(sid: string, m: Mutation): string {
  const ev = hostileEvent(sid, m.ended);
  const raws: string[] = [];
  for (const e of m.edits) {
    if (e.path.length === 0) return e.raw ?? "null";
    if (e.raw === null) {
      setPath(ev, e.path, undefined);
      continue;
    }
    let raw = e.raw;
    if (raw === DATA_AS_INVALID_JSON_STRING) {
      const data = { ...(ev.data as Record<string, unknown>), sim_iccid: 42 };
      raw = JSON.stringify(JSON.stringify(data));
    }
    setPath(ev, e.path, `${MARK}${raws.length}`);
    raws.push(raw);
  }
  let text = JSON.stringify(ev);
  raws.forEach((raw, i) => {
    text = text.replace(JSON.stringify(`${MARK}${i}`), () => raw);
  });
  return text;
}

/** An Event Streams test event: data as an object, a JSON string, null; Twilio or KORE type. */
function testEvent(variant: number, i: number): string {
  const id = `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
  const v = variant % 4;
  const type = v === 3 ? "com.kore.eventstreams.test.event" : "com.twilio.eventstreams.test-event";
  const obj = JSON.stringify({ test_id: id });
  const data = v === 1 ? JSON.stringify(obj) : v === 2 ? "null" : obj;
  return `{"specversion":"1.0","type":${q(type)},"source":"Sink","id":${q(id)},"data":${data}}`;
}

const ENVELOPE_FIELDS = [
  "specversion",
  "id",
  "source",
  "time",
  "datacontenttype",
  "dataschema",
  "subject",
  "x-extra",
];
const ENVELOPE_VALUES = [
  "5",
  "null",
  "{}",
  "[]",
  "1e400",
  "-0",
  q(""),
  '"\\ud800"',
  "99999999999999999999",
  `[${"[".repeat(50)}${"]".repeat(50)}]`,
];

export type HostilePlan = {
  requests: HostileRequest[];
  /** per kind, how many requests */
  kinds: Record<string, number>;
  /** event_sid of every made-up event → what was wrong with it */
  sidLabels: Map<string, string>;
};

/**
 * Samples `count` specs with a fixed seed and turns them into requests. Valid fleet deliveries
 * take consecutive batches of `fleetEvents`; whatever the sample did not take is appended at the
 * end, so every fleet event is delivered at least once.
 */
export function planHostile(
  fleetEvents: readonly Record<string, unknown>[],
  count: number,
  seed: number,
): HostilePlan {
  const specs = fc.sample(specArb, { numRuns: count, seed });
  const batch = fc.sample(fc.integer({ min: 1, max: 3 }), { numRuns: fleetEvents.length, seed });
  let nextEvent = 0;
  let nextBatch = 0;
  let sidCounter = 0;
  const sidLabels = new Map<string, string>();
  const freshSid = (label: string) => {
    const sid = `${HOSTILE_SID_PREFIX}${(sidCounter++).toString(16).padStart(32, "0")}`;
    sidLabels.set(sid, label);
    return sid;
  };
  const fleetAt = (i: number) => fleetEvents[i % fleetEvents.length] as Record<string, unknown>;
  /** a made-up event with mutation m: its text, and whether it is quarantined or counted */
  const made = (m: Mutation) => {
    const sid = freshSid(m.label);
    const odd = onlyDescriptive(m);
    return {
      text: mutatedText(sid, m),
      label: m.label,
      odd: odd ? { sid, label: m.label, fields: m.edits.map((e) => e.path.join(".")) } : null,
    };
  };
  type Made = ReturnType<typeof made>;
  /** quarantine rows for the made-up events that are not merely odd, at their positions */
  const refusedAt = (list: readonly { pos: number; m: Made }[]): Quarantined[] =>
    list.flatMap(({ pos, m }) => (m.odd ? [] : [{ pos, label: m.label }]));
  const oddOf = (list: readonly Made[]): OddCounted[] =>
    list.flatMap((m) => (m.odd ? [m.odd] : []));
  const requests: HostileRequest[] = [];
  const sentFleet: HostileRequest[] = [];

  const authed = (
    kind: string,
    detail: string,
    a: Auth,
    body: Buffer | string,
    expect: Expect,
  ): HostileRequest => {
    const b = typeof body === "string" ? Buffer.from(body, "utf8") : body;
    return { kind, detail: `${a}: ${detail}`, ...signed(a, b), body: b, expect };
  };
  const stored = (
    accepted: number,
    quarantine: Quarantined[],
    counted: OddCounted[] = [],
  ): Expect => ({
    status: 200,
    accepted,
    quarantine,
    counted,
  });
  /** a body that cannot be split into events: one row at position -1 */
  const whole = (label: string) => stored(0, [{ pos: -1, label }]);
  const resend = (r: HostileRequest): HostileRequest => ({
    ...r,
    kind: "fleet-resent",
    detail: `${r.detail} (verbatim resend)`,
  });
  const takeFleet = (a: Auth): HostileRequest | null => {
    if (nextEvent >= fleetEvents.length) return null;
    const n = batch[nextBatch++ % batch.length] ?? 1;
    const events = fleetEvents.slice(nextEvent, nextEvent + n);
    nextEvent += events.length;
    const r = authed(
      "fleet",
      `${events.length} real events`,
      a,
      JSON.stringify(events),
      stored(events.length, []),
    );
    sentFleet.push(r);
    return r;
  };

  const build = (s: Spec): HostileRequest => {
    switch (s.t) {
      case "fleet": {
        const prev = sentFleet[sentFleet.length - 1];
        if (s.resend && prev) return resend(prev);
        const r = takeFleet(s.auth);
        if (r) return r;
        const old = sentFleet[sidCounter % Math.max(1, sentFleet.length)];
        if (old) return resend(old);
        throw new Error("no fleet events to send");
      }
      case "copy": {
        const ev = structuredClone(fleetAt(s.idx));
        if (s.how === "data-as-string") {
          ev.data = JSON.stringify(ev.data);
          return authed(
            "real-data-as-string",
            "real event, data JSON-encoded",
            s.auth,
            JSON.stringify([ev]),
            stored(1, []),
          );
        }
        const field = ENVELOPE_FIELDS[s.f % ENVELOPE_FIELDS.length] as string;
        const raw = ENVELOPE_VALUES[s.v % ENVELOPE_VALUES.length] as string;
        ev[field] = MARK;
        const text = JSON.stringify([ev]).replace(JSON.stringify(MARK), () => raw);
        return authed(
          "real-odd-envelope",
          `real event, ${field}=${raw.slice(0, 40)}`,
          s.auth,
          text,
          stored(1, []),
        );
      }
      case "malformed":
        return authed(
          "malformed-json",
          JSON.stringify(s.text.slice(0, 60)),
          s.auth,
          s.text,
          whole("malformed JSON"),
        );
      case "truncated": {
        const text = JSON.stringify([fleetAt(s.idx)]);
        const cut = text.slice(0, Math.floor(s.cut * text.length));
        return authed(
          "truncated-json",
          `${cut.length}/${text.length} chars`,
          s.auth,
          cut,
          whole("truncated JSON"),
        );
      }
      case "scalar":
        return authed(
          "json-scalar",
          JSON.stringify(s.text.slice(0, 60)),
          s.auth,
          s.text,
          whole(`JSON scalar ${s.text.trim().slice(0, 30) || "(empty body)"}`),
        );
      case "mutated": {
        const events = s.muts.map(made);
        const texts = events.map((m) => m.text);
        const q1 = refusedAt(events.map((m, pos) => ({ pos, m })));
        const odd = oddOf(events);
        const labels = s.muts.map((m) => m.label).join(" | ");
        const single = s.muts.length === 1 && s.muts[0]?.edits.every((e) => e.path.length > 0);
        if (s.bare && single)
          return authed(
            "wrong-field",
            `bare object: ${labels}`,
            s.auth,
            texts[0] as string,
            stored(1, q1, odd),
          );
        return authed(
          "wrong-field",
          labels,
          s.auth,
          `[${texts.join(",")}]`,
          stored(texts.length, q1, odd),
        );
      }
      case "unknown-type": {
        const labels = s.types.map((t) => `type=${q(t)}`);
        const texts = s.types.map((t, i) =>
          mutatedText(freshSid(labels[i] ?? "unknown type"), {
            ended: true,
            label: "",
            edits: [{ path: ["type"], raw: q(t) }],
          }),
        );
        return authed(
          "unknown-type",
          labels.join(","),
          s.auth,
          `[${texts.join(",")}]`,
          stored(
            texts.length,
            labels.map((_, pos) => ({ pos, label: "unknown type" })),
          ),
        );
      }
      case "deep": {
        const arr = "[".repeat(DEEP) + "]".repeat(DEEP);
        const label = `${DEEP}-level nesting (${s.shape})`;
        // A deep body, or a deep element beside a real event: kept per event or as a whole body,
        // answered 200 and never billed. (Deep inside a descriptive field, below, it is billed.)
        const deep = (accepted: number, pos: number): Expect => ({
          ...(stored(accepted, [{ pos, label }]) as Extract<Expect, { accepted: number }>),
          orWhole: true,
        });
        if (s.shape === "array") return authed("deep", label, s.auth, arr, deep(1, 0));
        if (s.shape === "object")
          return authed(
            "deep",
            label,
            s.auth,
            `${'{"a":'.repeat(DEEP)}1${"}".repeat(DEEP)}`,
            deep(1, 0),
          );
        const m: Mutation = {
          ended: false,
          label,
          edits: [{ path: d("network", "mcc"), raw: arr }],
        };
        if (s.shape === "in-event") {
          // Deep inside a descriptive field: a billable event with an odd network.mcc.
          const x = made(m);
          return authed("deep", label, s.auth, `[${x.text}]`, stored(1, [], oddOf([x])));
        }
        return authed(
          "deep",
          label,
          s.auth,
          `[${JSON.stringify(fleetAt(s.idx))},${arr}]`,
          deep(2, 1),
        );
      }
      case "tiny": {
        const items = Array.from({ length: 1000 }, () => s.unit);
        for (let i = 0; i < s.tests; i++) items.splice(i * 300, 0, testEvent(i, i));
        const label = `1000 × ${s.unit}`;
        // Positions are indices in the body as sent, test events included.
        const testAt = new Set(Array.from({ length: s.tests }, (_, i) => i * 300));
        const qs = items.flatMap((_, pos) => (testAt.has(pos) ? [] : [{ pos, label }]));
        return authed(
          "1000-tiny-events",
          `${label} + ${s.tests} test events`,
          s.auth,
          `[${items.join(",")}]`,
          stored(1000, qs),
        );
      }
      case "test": {
        const tests = Array.from({ length: s.n }, (_, i) => testEvent(s.variant + i, i));
        const junkEvents = s.junk.map(made);
        const junk = junkEvents.map((m) => m.text);
        const body = `[${[...tests, ...junk].join(",")}]`;
        if (junk.length === 0)
          return authed("test-events", `${s.n} test events`, s.auth, body, {
            status: 200,
            test: true,
          });
        // Positions are indices in the body as sent: the junk follows the test events.
        const qs = refusedAt(junkEvents.map((m, i) => ({ pos: s.n + i, m })));
        return authed(
          "test-events+invalid",
          `${s.n} test events + ${junk.length} invalid`,
          s.auth,
          body,
          stored(junk.length, qs, oddOf(junkEvents)),
        );
      }
      case "non-utf8": {
        if (s.how === "raw") {
          const body = Buffer.from([0xff, ...s.bytes]);
          return authed(
            "non-utf8",
            `${body.length} raw bytes starting 0xff`,
            s.auth,
            body,
            whole("non-UTF-8 bytes"),
          );
        }
        const parts: Buffer[] = [];
        s.seqs.forEach((n, i) => {
          const bad = INVALID_UTF8[n % INVALID_UTF8.length] as number[];
          const text = mutatedText(freshSid("invalid UTF-8 in type"), {
            ended: true,
            label: "",
            edits: [{ path: ["type"], raw: q(MARK) }],
          });
          const [before, after] = text.split(JSON.stringify(MARK));
          parts.push(Buffer.from(i === 0 ? "[" : ","));
          parts.push(Buffer.from(`${before}"com.twilio.iot.supersim.connection.data-session.`));
          parts.push(Buffer.from(bad));
          parts.push(Buffer.from(`ended"${after}`));
        });
        parts.push(Buffer.from("]"));
        const qs = s.seqs.map((_, pos) => ({ pos, label: "invalid UTF-8 in type" }));
        return authed(
          "non-utf8",
          `${s.seqs.length} events, invalid UTF-8 inside type`,
          s.auth,
          Buffer.concat(parts),
          stored(s.seqs.length, qs),
        );
      }
      case "container": {
        const qs = s.text.includes("{") ? [{ pos: 0, label: `event ${s.text}` }] : [];
        return authed("empty-container", s.text, s.auth, s.text, stored(qs.length, qs));
      }
      case "mixed": {
        const all: string[] = [];
        const junk: { pos: number; m: Made }[] = [];
        for (let i = 0; i < Math.max(s.idxs.length, s.muts.length); i++) {
          const idx = s.idxs[i];
          if (idx !== undefined) all.push(JSON.stringify(fleetAt(idx)));
          const mut = s.muts[i];
          if (mut) {
            const m = made(mut);
            junk.push({ pos: all.length, m });
            all.push(m.text);
          }
        }
        const detail = `${s.idxs.length} real + ${s.muts.length} invalid: ${s.muts.map((m) => m.label).join(" | ")}`;
        return authed(
          "real+invalid",
          detail,
          s.auth,
          `[${all.join(",")}]`,
          stored(all.length, refusedAt(junk), oddOf(junk.map((j) => j.m))),
        );
      }
      case "unauth":
        return unauthenticated(s, () => freshSid(`bait (${s.how})`));
    }
  };

  for (const s of specs) requests.push(build(s));
  for (;;) {
    const r = takeFleet(nextBatch % 2 === 0 ? "twilio" : "kore");
    if (!r) break;
    requests.push(r);
  }
  const kinds: Record<string, number> = {};
  for (const r of requests) kinds[r.kind] = (kinds[r.kind] ?? 0) + 1;
  return { requests, kinds, sidLabels };
}

/** Requests that must be refused: bait bodies of valid HOSTILE_SIM events with real bytes. */
function unauthenticated(
  s: Extract<Spec, { t: "unauth" }>,
  freshSid: () => string,
): HostileRequest {
  const baits = Array.from({ length: s.baits }, () => hostileEvent(freshSid(), true));
  const body = Buffer.from(JSON.stringify(baits), "utf8");
  const altered = Buffer.from(body);
  const pos = s.flip % altered.length;
  altered[pos] = (altered[pos] as number) ^ s.xor;
  const json = { "content-type": "application/json" };
  const tw = signed("twilio", body);
  const ko = signed("kore", body);
  const r = (headers: Record<string, string>, b: Buffer, query = "", status: 401 | 403 = 403) => ({
    kind: "unauthenticated",
    detail: s.how,
    query,
    headers,
    body: b,
    expect: { status },
  });
  const how: UnauthHow = s.how;
  switch (how) {
    case "no-signature":
      return r(json, body, tw.query, 401);
    case "twilio-wrong-token": {
      const bad = signTwilio("not-the-token-0123456789abcdef01", PUBLIC_URL, body);
      return r({ ...json, "x-twilio-signature": bad.signature }, body, tw.query);
    }
    case "twilio-altered-body":
      return r(tw.headers, altered, tw.query);
    case "twilio-altered-body-rehashed":
      return r(tw.headers, altered, `?bodySHA256=${sha256Hex(altered)}`);
    case "twilio-no-bodySHA256":
      return r({ ...json, "x-twilio-signature": hmacSha1(TOKEN, PUBLIC_URL) }, body, "");
    case "twilio-no-bodySHA256-other-query":
      return r(
        { ...json, "x-twilio-signature": hmacSha1(TOKEN, `${PUBLIC_URL}?foo=bar`) },
        body,
        "?foo=bar",
      );
    case "twilio-uppercase-bodySHA256": {
      const url = `${PUBLIC_URL}?bodySHA256=${sha256Hex(body).toUpperCase()}`;
      return r(
        { ...json, "x-twilio-signature": hmacSha1(TOKEN, url) },
        body,
        url.slice(url.indexOf("?")),
      );
    }
    case "twilio-garbage-signature":
      return r({ ...json, "x-twilio-signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" }, body, tw.query);
    case "twilio-empty-signature":
      return r({ ...json, "x-twilio-signature": "" }, body, tw.query);
    case "twilio-signature-of-another-body": {
      const other = signTwilio(TOKEN, PUBLIC_URL, "[]");
      return r(
        { ...json, "x-twilio-signature": other.signature },
        body,
        other.url.slice(other.url.indexOf("?")),
      );
    }
    case "twilio-signature-header-twice":
      // fetch joins repeated headers with ", ": a valid signature twice is not a valid signature.
      return r(
        {
          ...json,
          "x-twilio-signature": `${tw.headers["x-twilio-signature"]}, ${tw.headers["x-twilio-signature"]}`,
        },
        body,
        tw.query,
      );
    case "kore-altered-body":
      return r(ko.headers, altered);
    case "kore-empty-signature":
      return r({ ...json, "kore-signature": "" }, body);
    case "kore-wrong-secret":
      return r(
        { ...json, "kore-signature": signKore("wrong-secret", "POST", PUBLIC_URL, body) },
        body,
      );
    case "kore-garbage-signature":
      return r({ ...json, "kore-signature": "z".repeat(64) }, body);
    case "kore-valid-but-garbage-twilio-signature":
      return r({ ...ko.headers, "x-twilio-signature": "garbage" }, body, tw.query);
  }
}
