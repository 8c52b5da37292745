// A stateful local Stripe for the Billing Meter endpoints simmeter uses. stripe-mock is
// stateless (no identifier uniqueness, idempotency replay or rate limits), so this emulator
// enforces the rules listed in /work/shared/reference/stripe-meters.md §11 and lets tests
// inject the failures the reporter must survive.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

export type EmulatorFaults = {
  /** probability per meter-event POST of answering 500 WITHOUT recording */
  error500Rate?: number;
  /** probability of answering 429 (Stripe-Should-Retry absent) WITHOUT recording */
  error429Rate?: number;
  /** probability of recording the event, then holding the answer for delayMs (the client times out) */
  delayAfterRecordRate?: number;
  delayMs?: number;
  seed?: number; // deterministic PRNG for the above
};

export type StripeEmulatorOptions = {
  port?: number; // 0 = free port (default)
  apiKey?: string; // default "sk_test_emulator"; requests must carry "Authorization: Bearer <apiKey>"
  now?: () => number; // ms clock, injectable; default Date.now
  faults?: EmulatorFaults;
  rateLimitPerSecond?: number; // default: unlimited (0); when set, over-budget calls get 429
  /** accept meter events and customer look-ups for any customer id */
  acceptAnyCustomer?: boolean;
  /** clock skew: added to `now` (negative = this Stripe's clock is behind the host's) */
  clockOffsetMs?: number;
};

export type RecordedMeterEvent = {
  identifier: string;
  eventName: string;
  customer: string;
  value: number;
  timestamp: number /* unix s */;
  receivedAt: number /* ms */;
  /** set (emulator ms clock) once a meter event adjustment cancelled the event */
  cancelledAt?: number;
};

export type EmulatorStats = {
  requests: number;
  meterEventCalls: number;
  concurrencyViolations: number;
  injected500: number;
  injected429: number;
  injectedDelays: number;
  duplicateIdentifiers: number;
  idempotentReplays: number;
  /** answers refused by the rateLimitPerSecond budget */
  rateLimited: number;
  /** "METHOD /route/pattern STATUS" -> count */
  byRoute: Record<string, number>;
};

export type StripeEmulator = {
  url: string;
  host: string;
  port: number;
  protocol: "http";
  apiKey: string;
  /** options for `new Stripe(apiKey, {...})` pointing at this emulator */
  stripeConfig(): { host: string; port: number; protocol: "http" };
  events(): RecordedMeterEvent[];
  /** per customer total of accepted meter events (for one event name, default all) */
  totalsByCustomer(eventName?: string): Map<string, number>;
  /** per customer per UTC hour (hour start unix seconds) totals */
  totalsByCustomerHour(eventName?: string): Map<string, Map<number, number>>;
  stats(): EmulatorStats;
  setFaults(f: EmulatorFaults): void;
  /** add an event directly (as if some other system sent it): used by tests to create drift */
  tamper(e: { customer: string; value: number; timestamp: number; eventName?: string }): void;
  addCustomer(id: string): void;
  /** changes the clock skew (see StripeEmulatorOptions.clockOffsetMs); 0 removes it */
  setClockOffsetMs(ms: number): void;
  close(): Promise<void>;
};

type Params = { [key: string]: unknown };

type Reply = {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** runs once the answer is written: the meter-event concurrency slot is held until then */
  after?: () => void;
};

type Meter = {
  id: string;
  object: "billing.meter";
  created: number;
  customer_mapping: { type: "by_id"; event_payload_key: string };
  default_aggregation: { formula: "sum" | "count" | "last" };
  display_name: string;
  event_name: string;
  event_time_window: "hour" | "day" | null;
  livemode: false;
  status: "active" | "inactive";
  status_transitions: { deactivated_at: number | null };
  updated: number;
  value_settings: { event_payload_key: string };
};

type StoredAnswer = {
  fingerprint: string;
  status: number;
  body: unknown;
  headers: Record<string, string>;
  savedAt: number;
};

const DAY_S = 86_400;
const PAST_WINDOW_S = 35 * DAY_S;
const FUTURE_WINDOW_S = 5 * 60;
const IDEMPOTENCY_TTL_MS = DAY_S * 1000;
const CANCEL_WINDOW_MS = DAY_S * 1000;
const MAX_SIGNIFICANT_DIGITS = 15;
const MAX_BODY_BYTES = 1 << 20;

class StripeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly extra: { code?: string; param?: string; headers?: Record<string, string> } = {},
  ) {
    super(message);
  }
}

const invalid = (
  message: string,
  extra: { code?: string; param?: string; headers?: Record<string, string> } = {},
) => new StripeHttpError(400, "invalid_request_error", message, extra);

const missingParam = (param: string) =>
  invalid(`Missing required param: ${param}.`, { code: "parameter_missing", param });

const noSuch = (kind: string, id: string, param = "id") =>
  new StripeHttpError(404, "invalid_request_error", `No such ${kind}: '${id}'`, {
    code: "resource_missing",
    param,
  });

// stripe-node maps any 429 to StripeRateLimitError and does not retry it unless
// Stripe-Should-Retry says so, which is why the header is left out here.
const rateLimited = (message: string, reason: string) =>
  new StripeHttpError(429, "invalid_request_error", message, {
    code: "rate_limit",
    headers: { "Stripe-Rate-Limited-Reason": reason },
  });

function errorReply(e: StripeHttpError): Reply {
  const error: Record<string, string> = { type: e.type, message: e.message };
  if (e.extra.code) error.code = e.extra.code;
  if (e.extra.param) error.param = e.extra.param;
  return { status: e.status, body: { error }, headers: e.extra.headers ?? {} };
}

/** Decodes Stripe's form encoding: `a[b][c]=1`, `a[]=x`, `a[0]=x` become nested values. */
export function parseStripeForm(search: URLSearchParams): Params {
  const root: Params = {};
  for (const [rawKey, value] of search) {
    const match = /^([^[\]]+)((?:\[[^\]]*\])*)$/.exec(rawKey);
    const path = match
      ? [match[1] ?? "", ...[...(match[2] ?? "").matchAll(/\[([^\]]*)\]/g)].map((m) => m[1] ?? "")]
      : [rawKey];
    let node: Params = root;
    path.forEach((segment, i) => {
      const key = segment === "" ? String(Object.keys(node).length) : segment;
      if (i === path.length - 1) {
        node[key] = value;
        return;
      }
      const child = node[key];
      if (typeof child !== "object" || child === null) node[key] = {};
      node = node[key] as Params;
    });
  }
  return arraysFromIndexedObjects(root) as Params;
}

function arraysFromIndexedObjects(value: unknown): unknown {
  if (typeof value !== "object" || value === null) return value;
  const entries = Object.entries(value as Params).map(
    ([k, v]) => [k, arraysFromIndexedObjects(v)] as const,
  );
  const indexed = entries.length > 0 && entries.every(([k], i) => k === String(i));
  return indexed ? entries.map(([, v]) => v) : Object.fromEntries(entries);
}

function canonical(value: unknown): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((value as Params)[k])}`).join(",")}}`;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const newId = (prefix: string) => `${prefix}_${randomBytes(12).toString("base64url")}`;

function optionalString(params: Params, key: string): string | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw invalid(`Invalid string: ${key}`, { param: key });
  return v;
}

function requiredString(params: Params, key: string): string {
  const v = optionalString(params, key);
  if (v === undefined || v === "") throw missingParam(key);
  return v;
}

function optionalObject(params: Params, key: string): Params | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw invalid(`Invalid object: ${key}`, { param: key });
  }
  return v as Params;
}

function optionalInteger(params: Params, key: string): number | undefined {
  const v = optionalString(params, key);
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v)) throw invalid(`Invalid integer: ${v}`, { param: key });
  return Number(v);
}

function rejectUnknownParams(params: Params, allowed: readonly string[]): void {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key) && key !== "expand") {
      throw invalid(`Received unknown parameter: ${key}`, { param: key });
    }
  }
}

/** Whole-number string, negatives allowed, at most 15 significant digits (API 2026-04-22+). */
function parseMeterValue(raw: string, param: string): number {
  if (!/^-?\d+$/.test(raw)) {
    throw invalid(`Meter event value must be a whole number, got '${raw}'.`, {
      code: "meter_event_invalid_value",
      param,
    });
  }
  const digits = raw.replace(/^-/, "").replace(/^0+(?=\d)/, "");
  if (digits.length > MAX_SIGNIFICANT_DIGITS) {
    throw invalid(
      `Meter event value '${raw}' has more than ${MAX_SIGNIFICANT_DIGITS} significant digits.`,
      { code: "meter_event_value_too_many_digits", param },
    );
  }
  return Number(raw);
}

function paginate<T extends { id: string }>(items: T[], query: Params, url: string) {
  const limit = optionalInteger(query, "limit") ?? 10;
  if (limit < 1 || limit > 100) {
    throw invalid("Invalid limit: must be between 1 and 100.", { param: "limit" });
  }
  const after = optionalString(query, "starting_after");
  const before = optionalString(query, "ending_before");
  const indexOf = (id: string, param: string) => {
    const i = items.findIndex((item) => item.id === id);
    if (i < 0) throw invalid(`No such object: '${id}'`, { code: "resource_missing", param });
    return i;
  };
  let page: T[];
  let hasMore: boolean;
  if (after !== undefined) {
    const start = indexOf(after, "starting_after") + 1;
    page = items.slice(start, start + limit);
    hasMore = start + limit < items.length;
  } else if (before !== undefined) {
    const end = indexOf(before, "ending_before");
    page = items.slice(Math.max(0, end - limit), end);
    hasMore = end - limit > 0;
  } else {
    page = items.slice(0, limit);
    hasMore = limit < items.length;
  }
  return { object: "list", data: page, has_more: hasMore, url };
}

type RouteContext = {
  method: string;
  path: string;
  pathParams: string[];
  params: Params;
  headers: IncomingMessage["headers"];
};
type Route = {
  method: "GET" | "POST";
  pattern: string;
  regex: RegExp;
  handle: (ctx: RouteContext) => Reply | Promise<Reply>;
};

export async function startStripeEmulator(
  opts: StripeEmulatorOptions = {},
): Promise<StripeEmulator> {
  const apiKey = opts.apiKey ?? "sk_test_emulator";
  const baseNow = opts.now ?? Date.now;
  let clockOffsetMs = opts.clockOffsetMs ?? 0;
  const now = () => baseNow() + clockOffsetMs;
  const nowS = () => Math.floor(now() / 1000);
  const rateLimitPerSecond = opts.rateLimitPerSecond ?? 0;
  const acceptAnyCustomer = opts.acceptAnyCustomer ?? false;

  let faults: EmulatorFaults = {};
  let random: () => number = Math.random;
  const setFaults = (f: EmulatorFaults) => {
    faults = { ...f };
    if (f.seed !== undefined) random = mulberry32(f.seed);
  };
  setFaults(opts.faults ?? {});

  const meters: Meter[] = [];
  const customers = new Map<string, { id: string; created: number; params: Params }>();
  const recorded: RecordedMeterEvent[] = [];
  const byIdentifier = new Map<string, RecordedMeterEvent>();
  const idempotency = new Map<string, StoredAnswer>();
  const inFlight = new Set<string>();
  // Real time, not the injectable clock: throughput is about wall time, and test clocks are often frozen.
  const recentCalls: number[] = [];
  const pendingDelays = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();
  const stats: EmulatorStats = {
    requests: 0,
    meterEventCalls: 0,
    concurrencyViolations: 0,
    injected500: 0,
    injected429: 0,
    injectedDelays: 0,
    duplicateIdentifiers: 0,
    idempotentReplays: 0,
    rateLimited: 0,
    byRoute: {},
  };
  let tamperSeq = 0;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          pendingDelays.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      pendingDelays.add(entry);
    });

  const customerExists = (id: string) => acceptAnyCustomer || customers.has(id);
  const customerObject = (id: string) => {
    const c = customers.get(id);
    const p = c?.params ?? {};
    return {
      id,
      object: "customer",
      created: c?.created ?? nowS(),
      email: p.email ?? null,
      name: p.name ?? null,
      description: p.description ?? null,
      metadata: p.metadata ?? {},
      livemode: false,
    };
  };

  const getMeter = (id: string) => {
    const meter = meters.find((m) => m.id === id);
    if (!meter) throw noSuch("billing.meter", id);
    return meter;
  };

  const record = (e: Omit<RecordedMeterEvent, "receivedAt">) => {
    const event: RecordedMeterEvent = { ...e, receivedAt: now() };
    recorded.push(event);
    byIdentifier.set(event.identifier, event);
    return event;
  };

  function createMeter({ params }: RouteContext): Reply {
    rejectUnknownParams(params, [
      "display_name",
      "event_name",
      "default_aggregation",
      "customer_mapping",
      "value_settings",
      "event_time_window",
    ]);
    const displayName = requiredString(params, "display_name");
    const eventName = requiredString(params, "event_name");
    const formula = optionalString(optionalObject(params, "default_aggregation") ?? {}, "formula");
    if (formula === undefined) throw missingParam("default_aggregation[formula]");
    if (formula !== "sum" && formula !== "count" && formula !== "last") {
      throw invalid(`Invalid default_aggregation[formula]: ${formula}`, {
        param: "default_aggregation[formula]",
      });
    }
    const mapping = optionalObject(params, "customer_mapping") ?? {};
    const mappingType = optionalString(mapping, "type") ?? "by_id";
    if (mappingType !== "by_id") {
      throw invalid(`Invalid customer_mapping[type]: ${mappingType}`, {
        param: "customer_mapping[type]",
      });
    }
    const window = optionalString(params, "event_time_window") ?? null;
    if (window !== null && window !== "hour" && window !== "day") {
      throw invalid(`Invalid event_time_window: ${window}`, { param: "event_time_window" });
    }
    if (meters.some((m) => m.event_name === eventName)) {
      throw invalid(`A meter with event_name '${eventName}' already exists.`, {
        param: "event_name",
      });
    }
    const meter: Meter = {
      id: newId("mtr"),
      object: "billing.meter",
      created: nowS(),
      customer_mapping: {
        type: "by_id",
        event_payload_key: optionalString(mapping, "event_payload_key") ?? "stripe_customer_id",
      },
      default_aggregation: { formula },
      display_name: displayName,
      event_name: eventName,
      event_time_window: window,
      livemode: false,
      status: "active",
      status_transitions: { deactivated_at: null },
      updated: nowS(),
      value_settings: {
        event_payload_key:
          optionalString(optionalObject(params, "value_settings") ?? {}, "event_payload_key") ??
          "value",
      },
    };
    meters.push(meter);
    return { status: 200, body: meter };
  }

  function setMeterStatus(id: string, status: Meter["status"]): Reply {
    const meter = getMeter(id);
    meter.status = status;
    meter.status_transitions.deactivated_at = status === "inactive" ? nowS() : null;
    meter.updated = nowS();
    return { status: 200, body: meter };
  }

  async function createMeterEvent({ params }: RouteContext): Promise<Reply> {
    rejectUnknownParams(params, ["event_name", "payload", "identifier", "timestamp"]);
    const eventName = requiredString(params, "event_name");
    const meter = meters.find((m) => m.event_name === eventName);
    if (!meter) {
      throw invalid(`No active meter was found with event_name '${eventName}'.`, {
        code: "no_meter",
        param: "event_name",
      });
    }
    if (meter.status !== "active") {
      throw invalid(
        `The meter ${meter.id} for event_name '${eventName}' is inactive (archived) and does not accept meter events.`,
        { code: "archived_meter", param: "event_name" },
      );
    }
    const payload = optionalObject(params, "payload");
    if (!payload) throw missingParam("payload");
    for (const [k, v] of Object.entries(payload)) {
      if (typeof v !== "string") throw invalid(`Invalid string: payload[${k}]`);
    }
    const customerKey = meter.customer_mapping.event_payload_key;
    const valueKey = meter.value_settings.event_payload_key;
    const customer = payload[customerKey];
    if (typeof customer !== "string" || customer === "") {
      throw invalid(`Customer mapping key ${customerKey} not found in payload.`, {
        code: "meter_event_no_customer_defined",
        param: `payload[${customerKey}]`,
      });
    }
    const rawValue = payload[valueKey];
    if (typeof rawValue !== "string" && meter.default_aggregation.formula !== "count") {
      throw invalid(`Value key ${valueKey} not found in payload.`, {
        code: "meter_event_invalid_value",
        param: `payload[${valueKey}]`,
      });
    }
    const value =
      typeof rawValue === "string" ? parseMeterValue(rawValue, `payload[${valueKey}]`) : 1;
    const timestamp = optionalInteger(params, "timestamp") ?? nowS();
    if (timestamp < nowS() - PAST_WINDOW_S) {
      throw invalid("Timestamp must be within the past 35 calendar days.", {
        code: "timestamp_too_far_in_past",
        param: "timestamp",
      });
    }
    if (timestamp > nowS() + FUTURE_WINDOW_S) {
      throw invalid("Timestamp must be no more than 5 minutes in the future.", {
        code: "timestamp_in_future",
        param: "timestamp",
      });
    }
    const givenIdentifier = optionalString(params, "identifier");
    if (givenIdentifier !== undefined && (givenIdentifier === "" || givenIdentifier.length > 100)) {
      throw invalid("identifier must be 1 to 100 characters long.", { param: "identifier" });
    }
    if (!customerExists(customer)) {
      throw invalid(`No such customer: '${customer}'`, {
        code: "resource_missing",
        param: `payload[${customerKey}]`,
      });
    }

    // Stripe allows one concurrent call per customer per meter; what the loser receives is
    // undocumented, so it gets the ordinary 429 the SDK turns into StripeRateLimitError.
    const slot = `${meter.id}|${customer}`;
    if (inFlight.has(slot)) {
      stats.concurrencyViolations++;
      throw rateLimited(
        `Too many concurrent requests for customer '${customer}' on meter ${meter.id}: only one concurrent call per customer per meter is allowed.`,
        "resource-specific",
      );
    }
    inFlight.add(slot);
    const release = () => inFlight.delete(slot);
    try {
      const reply = await acceptMeterEvent(
        meter,
        customer,
        value,
        timestamp,
        givenIdentifier,
        payload,
      );
      return { ...reply, after: release };
    } catch (e) {
      release();
      throw e;
    }
  }

  async function acceptMeterEvent(
    meter: Meter,
    customer: string,
    value: number,
    timestamp: number,
    givenIdentifier: string | undefined,
    payload: Params,
  ): Promise<Reply> {
    if (givenIdentifier !== undefined && byIdentifier.has(givenIdentifier)) {
      stats.duplicateIdentifiers++;
      throw invalid(`An event already exists with identifier ${givenIdentifier}.`, {
        param: "identifier",
        headers: { "Stripe-Should-Retry": "false" },
      });
    }

    // One draw per call keeps the injected rates exact for a given seed.
    const p500 = faults.error500Rate ?? 0;
    const p429 = faults.error429Rate ?? 0;
    const pDelay = faults.delayAfterRecordRate ?? 0;
    const r = p500 + p429 + pDelay > 0 ? random() : 1;
    if (r < p500) {
      stats.injected500++;
      return {
        status: 500,
        body: { error: { type: "api_error", message: "An unknown error occurred (injected)." } },
      };
    }
    if (r < p500 + p429) {
      stats.injected429++;
      throw rateLimited(
        "Request rate limit exceeded (injected). Use exponential backoff.",
        "endpoint-rate",
      );
    }

    const event = record({
      identifier: givenIdentifier ?? `emu_${randomUUID()}`,
      eventName: meter.event_name,
      customer,
      value,
      timestamp,
    });
    const body = {
      object: "billing.meter_event",
      created: Math.floor(event.receivedAt / 1000),
      event_name: event.eventName,
      identifier: event.identifier,
      livemode: false,
      payload,
      timestamp: event.timestamp,
    };
    if (r < p500 + p429 + pDelay) {
      stats.injectedDelays++;
      await sleep(faults.delayMs ?? 30_000);
    }
    return { status: 200, body };
  }

  function listEventSummaries({ pathParams, params, path }: RouteContext): Reply {
    const meter = getMeter(pathParams[0] ?? "");
    rejectUnknownParams(params, [
      "customer",
      "start_time",
      "end_time",
      "value_grouping_window",
      "limit",
      "starting_after",
      "ending_before",
    ]);
    const customer = requiredString(params, "customer");
    const start = optionalInteger(params, "start_time");
    const end = optionalInteger(params, "end_time");
    if (start === undefined) throw missingParam("start_time");
    if (end === undefined) throw missingParam("end_time");
    for (const [param, t] of [
      ["start_time", start],
      ["end_time", end],
    ] as const) {
      if (t % 60 !== 0) throw invalid(`${param} must be aligned to minute boundaries.`, { param });
    }
    if (start >= end) throw invalid("start_time must be before end_time.", { param: "start_time" });
    const grouping = optionalString(params, "value_grouping_window");
    if (grouping !== undefined && grouping !== "hour" && grouping !== "day") {
      throw invalid(`Invalid value_grouping_window: ${grouping}`, {
        param: "value_grouping_window",
      });
    }
    const step = grouping === "hour" ? 3600 : grouping === "day" ? DAY_S : end - start;
    if (grouping !== undefined && (start % step !== 0 || end % step !== 0)) {
      throw invalid(`start_time and end_time must be aligned to ${grouping} boundaries.`, {
        param: "value_grouping_window",
      });
    }
    const events = recorded.filter(
      (e) => e.eventName === meter.event_name && e.customer === customer && !e.cancelledAt,
    );
    const data = [];
    for (let t = start; t < end; t += step) {
      const inWindow = events.filter((e) => e.timestamp >= t && e.timestamp < t + step);
      data.push({
        id: `mtrusum_${createHash("sha1")
          .update(`${meter.id}|${customer}|${t}|${t + step}`)
          .digest("hex")
          .slice(0, 24)}`,
        object: "billing.meter_event_summary",
        aggregated_value: aggregate(meter.default_aggregation.formula, inWindow),
        end_time: t + step,
        livemode: false,
        meter: meter.id,
        start_time: t,
      });
    }
    return { status: 200, body: paginate(data, params, path) };
  }

  function createAdjustment({ params }: RouteContext): Reply {
    rejectUnknownParams(params, ["event_name", "type", "cancel"]);
    const eventName = requiredString(params, "event_name");
    const type = requiredString(params, "type");
    if (type !== "cancel") throw invalid(`Invalid type: ${type}`, { param: "type" });
    const identifier = requiredString(optionalObject(params, "cancel") ?? {}, "identifier");
    const event = byIdentifier.get(identifier);
    if (!event || event.eventName !== eventName) {
      throw invalid(`No meter event with identifier ${identifier} was found for '${eventName}'.`, {
        code: "resource_missing",
        param: "cancel[identifier]",
      });
    }
    if (now() - event.receivedAt > CANCEL_WINDOW_MS) {
      throw invalid(
        `The meter event ${identifier} was received more than 24 hours ago and can no longer be cancelled.`,
        { param: "cancel[identifier]" },
      );
    }
    event.cancelledAt ??= now();
    return {
      status: 200,
      body: {
        object: "billing.meter_event_adjustment",
        cancel: { identifier },
        event_name: eventName,
        livemode: false,
        status: "complete",
        type: "cancel",
      },
    };
  }

  const route = (method: Route["method"], pattern: string, handle: Route["handle"]): Route => ({
    method,
    pattern,
    regex: new RegExp(`^${pattern.replace(/:[a-z]+/g, "([^/]+)")}$`),
    handle,
  });
  const routes: Route[] = [
    route("POST", "/v1/billing/meters", createMeter),
    route("GET", "/v1/billing/meters", ({ params, path }) => {
      const status = optionalString(params, "status");
      const list = meters.filter((m) => status === undefined || m.status === status).reverse();
      return { status: 200, body: paginate(list, params, path) };
    }),
    route("GET", "/v1/billing/meters/:id", ({ pathParams }) => ({
      status: 200,
      body: getMeter(pathParams[0] ?? ""),
    })),
    route("POST", "/v1/billing/meters/:id", ({ pathParams, params }) => {
      rejectUnknownParams(params, ["display_name"]);
      const meter = getMeter(pathParams[0] ?? "");
      meter.display_name = optionalString(params, "display_name") ?? meter.display_name;
      meter.updated = nowS();
      return { status: 200, body: meter };
    }),
    route("POST", "/v1/billing/meters/:id/deactivate", ({ pathParams }) =>
      setMeterStatus(pathParams[0] ?? "", "inactive"),
    ),
    route("POST", "/v1/billing/meters/:id/reactivate", ({ pathParams }) =>
      setMeterStatus(pathParams[0] ?? "", "active"),
    ),
    route("GET", "/v1/billing/meters/:id/event_summaries", listEventSummaries),
    route("POST", "/v1/billing/meter_events", createMeterEvent),
    route("POST", "/v1/billing/meter_event_adjustments", createAdjustment),
    route("POST", "/v1/customers", ({ params }) => {
      const id = newId("cus");
      customers.set(id, { id, created: nowS(), params });
      return { status: 200, body: customerObject(id) };
    }),
    route("GET", "/v1/customers/:id", ({ pathParams }) => {
      const id = pathParams[0] ?? "";
      if (!customerExists(id)) throw noSuch("customer", id);
      return { status: 200, body: customerObject(id) };
    }),
    route("GET", "/v1/balance", () => ({
      status: 200,
      body: {
        object: "balance",
        available: [{ amount: 0, currency: "usd", source_types: { card: 0 } }],
        pending: [{ amount: 0, currency: "usd", source_types: { card: 0 } }],
        livemode: false,
      },
    })),
    route("GET", "/v1/account", () => ({
      status: 200,
      body: {
        id: "acct_emulator",
        object: "account",
        business_profile: { name: "Stripe emulator" },
        charges_enabled: true,
        country: "US",
        default_currency: "usd",
        details_submitted: true,
        payouts_enabled: true,
        type: "standard",
      },
    })),
  ];

  function checkAuth(headers: IncomingMessage["headers"]): void {
    const auth = headers.authorization ?? "";
    let key = "";
    if (auth.startsWith("Bearer ")) key = auth.slice(7).trim();
    // curl -u sk_test_...: sends the key as the basic-auth user name.
    if (auth.startsWith("Basic ")) {
      key = Buffer.from(auth.slice(6), "base64").toString().split(":")[0] ?? "";
    }
    if (key === "") {
      throw new StripeHttpError(
        401,
        "authentication_error",
        "You did not provide an API key. Provide it in the Authorization header (Authorization: Bearer YOUR_SECRET_KEY).",
      );
    }
    if (key !== apiKey) {
      throw new StripeHttpError(
        401,
        "authentication_error",
        `Invalid API Key provided: ${key.slice(0, 8)}${"*".repeat(Math.max(0, key.length - 12))}${key.slice(-4)}`,
      );
    }
  }

  function checkRateBudget(): void {
    if (rateLimitPerSecond <= 0) return;
    const t = performance.now();
    while (recentCalls.length > 0 && (recentCalls[0] ?? 0) <= t - 1000) recentCalls.shift();
    if (recentCalls.length >= rateLimitPerSecond) {
      stats.rateLimited++;
      throw rateLimited(
        "Request rate limit exceeded. You can learn more about rate limits here https://docs.stripe.com/rate-limits.",
        "global-rate",
      );
    }
    recentCalls.push(t);
  }

  async function readBody(req: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) throw invalid("Request body too large.");
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  async function dispatch(req: IncomingMessage): Promise<{ reply: Reply; label: string }> {
    const method = req.method ?? "GET";
    const url = new URL(req.url ?? "/", "http://emulator.local");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const found = routes.find((r) => r.method === method && r.regex.test(path));
    const label = `${method} ${found?.pattern ?? "unknown"}`;
    try {
      const body = await readBody(req);
      checkAuth(req.headers);
      if (!found) {
        throw new StripeHttpError(
          404,
          "invalid_request_error",
          `Unrecognized request URL (${method}: ${path}). Please see https://docs.stripe.com/ or we can help at https://support.stripe.com/.`,
        );
      }
      if (found.pattern === "/v1/billing/meter_events") stats.meterEventCalls++;
      checkRateBudget();
      let params: Params;
      if (method === "GET") params = parseStripeForm(url.searchParams);
      else if ((req.headers["content-type"] ?? "").includes("application/json")) {
        params = body === "" ? {} : (JSON.parse(body) as Params);
      } else params = parseStripeForm(new URLSearchParams(body));

      const key = method === "POST" ? req.headers["idempotency-key"] : undefined;
      if (typeof key === "string" && key.length > 255) {
        throw invalid("Idempotency-Key must be at most 255 characters long.");
      }
      const fingerprint = canonical({ method, path, params });
      if (typeof key === "string") {
        const stored = idempotency.get(key);
        if (stored && now() - stored.savedAt >= IDEMPOTENCY_TTL_MS) idempotency.delete(key);
        else if (stored) {
          if (stored.fingerprint !== fingerprint) {
            throw new StripeHttpError(
              400,
              "idempotency_error",
              `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
            );
          }
          stats.idempotentReplays++;
          const headers = { ...stored.headers, "Idempotent-Replayed": "true" };
          return { reply: { status: stored.status, body: stored.body, headers }, label };
        }
      }

      const m = found.regex.exec(path);
      const pathParams = (m?.slice(1) ?? []).map((s) => decodeURIComponent(s));
      let reply: Reply;
      try {
        reply = await found.handle({ method, path, pathParams, params, headers: req.headers });
      } catch (e) {
        if (e instanceof StripeHttpError) return { reply: errorReply(e), label };
        throw e;
      }
      // Stripe saves the result once the endpoint started executing (success or 5xx);
      // validation failures and concurrency conflicts leave the key unused.
      if (typeof key === "string" && (reply.status < 300 || reply.status >= 500)) {
        idempotency.set(key, {
          fingerprint,
          status: reply.status,
          body: reply.body,
          headers: reply.headers ?? {},
          savedAt: now(),
        });
      }
      return { reply, label };
    } catch (e) {
      if (e instanceof StripeHttpError) return { reply: errorReply(e), label };
      if (e instanceof SyntaxError)
        return { reply: errorReply(invalid("Invalid JSON body.")), label };
      const message = e instanceof Error ? e.message : String(e);
      return {
        reply: { status: 500, body: { error: { type: "api_error", message } } },
        label,
      };
    }
  }

  let requestSeq = 0;
  function write(req: IncomingMessage, res: ServerResponse, reply: Reply): void {
    const headers: Record<string, string> = {
      "Content-Type": "application/json",
      "Request-Id": `req_emu_${(++requestSeq).toString().padStart(8, "0")}`,
      "Stripe-Version": String(req.headers["stripe-version"] ?? "2026-10-28.endive"),
      // The emulator's clock (with its offset), not Node's automatic real-time Date header.
      Date: new Date(now()).toUTCString(),
      ...reply.headers,
    };
    const key = req.headers["idempotency-key"];
    if (req.method === "POST" && typeof key === "string") headers["Idempotency-Key"] = key;
    if (!res.destroyed) {
      res.writeHead(reply.status, headers);
      res.end(`${JSON.stringify(reply.body, null, 2)}\n`);
    }
    reply.after?.();
  }

  const server = createServer((req, res) => {
    stats.requests++;
    void dispatch(req).then(({ reply, label }) => {
      const k = `${label} ${reply.status}`;
      stats.byRoute[k] = (stats.byRoute[k] ?? 0) + 1;
      write(req, res, reply);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = "127.0.0.1";

  const totals = (eventName?: string) =>
    recorded.filter(
      (e) => !e.cancelledAt && (eventName === undefined || e.eventName === eventName),
    );

  return {
    url: `http://${host}:${port}`,
    host,
    port,
    protocol: "http",
    apiKey,
    stripeConfig: () => ({ host, port, protocol: "http" }),
    events: () => recorded.map((e) => ({ ...e })),
    totalsByCustomer(eventName) {
      const out = new Map<string, number>();
      for (const e of totals(eventName)) out.set(e.customer, (out.get(e.customer) ?? 0) + e.value);
      return out;
    },
    totalsByCustomerHour(eventName) {
      const out = new Map<string, Map<number, number>>();
      for (const e of totals(eventName)) {
        const hours = out.get(e.customer) ?? new Map<number, number>();
        const hour = Math.floor(e.timestamp / 3600) * 3600;
        hours.set(hour, (hours.get(hour) ?? 0) + e.value);
        out.set(e.customer, hours);
      }
      return out;
    },
    stats: () => ({ ...stats, byRoute: { ...stats.byRoute } }),
    setFaults,
    tamper(e) {
      const eventName = e.eventName ?? meters[0]?.event_name;
      if (eventName === undefined)
        throw new Error("tamper needs an eventName or an existing meter");
      record({
        identifier: `tamper_${++tamperSeq}_${randomUUID()}`,
        eventName,
        customer: e.customer,
        value: e.value,
        timestamp: e.timestamp,
      });
    },
    addCustomer(id) {
      if (!customers.has(id)) customers.set(id, { id, created: nowS(), params: {} });
    },
    setClockOffsetMs(ms) {
      clockOffsetMs = ms;
    },
    async close() {
      for (const d of pendingDelays) {
        clearTimeout(d.timer);
        d.resolve();
      }
      pendingDelays.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function aggregate(formula: Meter["default_aggregation"]["formula"], events: RecordedMeterEvent[]) {
  if (formula === "count") return events.length;
  if (formula === "sum") return events.reduce((sum, e) => sum + e.value, 0);
  const last = events.reduce<RecordedMeterEvent | undefined>(
    (best, e) =>
      !best ||
      e.timestamp > best.timestamp ||
      (e.timestamp === best.timestamp && e.receivedAt >= best.receivedAt)
        ? e
        : best,
    undefined,
  );
  return last?.value ?? 0;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "12111" },
      "api-key": { type: "string" },
      "accept-any-customer": { type: "boolean", default: false },
      customer: { type: "string", multiple: true },
      "rate-limit": { type: "string" },
      "error-500-rate": { type: "string" },
      "error-429-rate": { type: "string" },
      "delay-rate": { type: "string" },
      "delay-ms": { type: "string" },
      seed: { type: "string" },
      "clock-offset-ms": { type: "string" },
    },
  });
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const emu = await startStripeEmulator({
    port: Number(values.port),
    apiKey: values["api-key"],
    acceptAnyCustomer: values["accept-any-customer"],
    rateLimitPerSecond: num(values["rate-limit"]),
    clockOffsetMs: num(values["clock-offset-ms"]),
    faults: {
      error500Rate: num(values["error-500-rate"]),
      error429Rate: num(values["error-429-rate"]),
      delayAfterRecordRate: num(values["delay-rate"]),
      delayMs: num(values["delay-ms"]),
      seed: num(values.seed),
    },
  });
  for (const id of values.customer ?? []) emu.addCustomer(id);
  process.stdout.write(`Stripe emulator listening on ${emu.url}\nAPI key: ${emu.apiKey}\n`);
  const stop = () => {
    void emu.close().then(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
