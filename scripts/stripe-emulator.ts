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
  /** meter events of these customers are refused as for an unknown customer (a permanent 400) */
  refuseCustomers?: string[];
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
  /** invoice finalization grace: drafts finalize this long after creation (default 3600, max 72 h) */
  invoiceGraceSeconds?: number;
  /**
   * For trying simmeter out and for tests that are not about subscriptions: a customer asked about
   * with GET /v1/subscriptions?customer= that has no subscription gets one, monthly on the 1st
   * (00:00 UTC) to a metered price on the first meter, started at the beginning of the previous
   * month. Real Stripe does nothing of the kind.
   */
  autoSubscribe?: boolean;
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
  /** 400 idempotency_error: a key reused with other parameters (a client bug) */
  idempotencyErrors: number;
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
  // Billing test helpers (not Stripe endpoints). Each first catches up rollovers and
  // finalizations due on the emulator clock, like every request does.
  /** a recurring price: metered on `meter` (or the meter of `eventName`, default the first meter) */
  addPrice(p?: AddPriceInput): EmulatorPrice;
  /** archives (false) or reactivates a price; existing subscription items keep it */
  setPriceActive(id: string, active: boolean): EmulatorPrice;
  /** a subscription with one item per price, periods computed from `anchor` */
  addSubscription(s: AddSubscriptionInput): EmulatorSubscription;
  setSubscriptionStatus(id: string, status: SubscriptionStatus): EmulatorSubscription;
  /** grace for invoices created from now on (0..259200 s) */
  setInvoiceGraceSeconds(seconds: number): void;
  invoiceGraceSeconds(): number;
  /** every cycle invoice, oldest first, all lines embedded with their current quantities */
  invoices(filter?: InvoiceFilter): EmulatorInvoice[];
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

// ---------------------------------------------------------------------------------------------
// Billing: metered prices, subscriptions with per-item periods, cycle invoices and previews, as
// /work/shared/reference/stripe-billing-periods.md describes them. Nothing runs on a timer: the
// emulator clock is read at the start of every request and test-helper call (`advance`), which
// catches up every rollover and finalization that fell due since, in time order.

export type BillingInterval = "day" | "week" | "month" | "year";
export type SubscriptionStatus =
  | "incomplete"
  | "incomplete_expired"
  | "trialing"
  | "active"
  | "past_due"
  | "canceled"
  | "unpaid"
  | "paused";

export type AddPriceInput = {
  id?: string;
  /** meter id (mtr_…) of a metered price; or `eventName` to name it; default: the first meter */
  meter?: string;
  eventName?: string;
  /** default "metered"; a licensed price has no meter and is billed in advance, quantity 1 */
  usageType?: "metered" | "licensed";
  interval?: BillingInterval; // default "month"
  intervalCount?: number; // default 1
  product?: string; // default a new prod_… id
  active?: boolean; // default true
  currency?: string; // default "usd"
  nickname?: string;
  lookupKey?: string;
};

export type AddSubscriptionInput = {
  id?: string;
  customer: string;
  /** one price id, or several with `prices` (one item each) */
  price?: string;
  prices?: string[];
  /** billing_cycle_anchor, epoch ms (kept to the second, UTC time of day included) */
  anchor: number;
  /** start_date, epoch ms; default the anchor if it is not in the future, else now */
  startDate?: number;
  status?: SubscriptionStatus; // default "active"
};

export type InvoiceFilter = {
  customer?: string;
  subscription?: string;
  status?: "draft" | "open";
  billingReason?: string;
};

type Loose = Record<string, unknown>;

export type EmulatorPrice = Loose & {
  id: string;
  object: "price";
  active: boolean;
  created: number;
  product: string;
  recurring: {
    interval: BillingInterval;
    interval_count: number;
    meter: string | null;
    trial_period_days: null;
    usage_type: "metered" | "licensed";
  };
};

export type EmulatorSubscriptionItem = Loose & {
  id: string;
  object: "subscription_item";
  current_period_start: number;
  current_period_end: number;
  price: EmulatorPrice;
  subscription: string;
};

export type EmulatorSubscription = Loose & {
  id: string;
  object: "subscription";
  billing_cycle_anchor: number;
  customer: string;
  latest_invoice: string | null;
  start_date: number;
  status: SubscriptionStatus;
  items: {
    object: "list";
    data: EmulatorSubscriptionItem[];
    has_more: boolean;
    total_count: number;
    url: string;
  };
};

export type EmulatorInvoiceLine = Loose & {
  id: string;
  object: "line_item";
  invoice: string;
  period: { start: number; end: number };
  quantity: number;
  quantity_decimal: string;
  pricing: {
    type: "price_details";
    price_details: { price: string; product: string };
    unit_amount_decimal: null;
  };
  parent: {
    type: "subscription_item_details";
    invoice_item_details: null;
    subscription_item_details: {
      invoice_item: null;
      proration: false;
      proration_details: { credited_items: null };
      subscription: string;
      subscription_item: string;
    };
  };
  subscription: string;
};

export type EmulatorInvoice = Loose & {
  id: string;
  object: "invoice";
  automatically_finalizes_at: number | null;
  billing_reason: "subscription_cycle" | "upcoming";
  created: number;
  customer: string;
  number: string | null;
  parent: {
    type: "subscription_details";
    quote_details: null;
    subscription_details: { metadata: Record<string, string>; subscription: string };
  };
  period_start: number;
  period_end: number;
  status: "draft" | "open";
  status_transitions: {
    finalized_at: number | null;
    marked_uncollectible_at: null;
    paid_at: null;
    voided_at: null;
  };
  lines: {
    object: "list";
    data: EmulatorInvoiceLine[];
    has_more: boolean;
    total_count: number;
    url: string;
  };
};

const SUBSCRIPTION_STATUSES: readonly SubscriptionStatus[] = [
  "incomplete",
  "incomplete_expired",
  "trialing",
  "active",
  "past_due",
  "canceled",
  "unpaid",
  "paused",
];
/** Statuses whose items move on to new periods and get cycle invoices. A paused subscription
 * "doesn't advance to a new billing period or generate invoices until it resumes"; incomplete
 * ones (first payment pending) are held the same way here. */
const ADVANCING: ReadonlySet<string> = new Set(["active", "trialing", "past_due", "unpaid"]);
const TERMINAL: ReadonlySet<string> = new Set(["canceled", "incomplete_expired"]);
/** Stripe: "Maximum of three years interval allowed (3 years, 36 months, or 156 weeks)". */
const MAX_INTERVAL_COUNT: Record<BillingInterval, number> = {
  day: 1095,
  week: 156,
  month: 36,
  year: 3,
};
const DEFAULT_INVOICE_GRACE_S = 3600;
const MAX_INVOICE_GRACE_S = 72 * 3600;
const EMBEDDED_LINES = 10;
const EMBEDDED_ITEMS = 20;
const MAX_EXPAND_DEPTH = 4;
const EXPANDABLE: ReadonlySet<string> = new Set([
  "customer",
  "invoice",
  "latest_invoice",
  "price",
  "subscription",
]);

/**
 * Period boundary `k` intervals after the anchor (k may be negative), in Unix seconds: the
 * anchor's day of month clamped to short months (Jan 31 → Feb 28/29 → Mar 31 → Apr 30), always
 * computed from the anchor (never from the previous boundary), the anchor's UTC time kept.
 */
export function periodBoundary(
  anchorS: number,
  interval: BillingInterval,
  count: number,
  k: number,
): number {
  if (interval === "day") return anchorS + k * count * DAY_S;
  if (interval === "week") return anchorS + k * count * 7 * DAY_S;
  const a = new Date(anchorS * 1000);
  const months = k * count * (interval === "year" ? 12 : 1);
  const total = a.getUTCFullYear() * 12 + a.getUTCMonth() + months;
  const y = Math.floor(total / 12);
  const m = total - y * 12;
  const lastDay = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  const day = Math.min(a.getUTCDate(), lastDay);
  const ms = Date.UTC(y, m, day, a.getUTCHours(), a.getUTCMinutes(), a.getUTCSeconds());
  return ms / 1000;
}

/** The smallest k whose boundary lies strictly after `t`. */
function nextBoundaryIndex(
  anchorS: number,
  interval: BillingInterval,
  count: number,
  t: number,
): number {
  const days = { day: 1, week: 7, month: 30.436875, year: 365.2425 }[interval];
  let k = Math.floor((t - anchorS) / (days * count * DAY_S));
  while (periodBoundary(anchorS, interval, count, k) > t) k--;
  while (periodBoundary(anchorS, interval, count, k) <= t) k++;
  return k;
}

type PriceRec = {
  id: string;
  created: number;
  active: boolean;
  product: string;
  currency: string;
  nickname: string | null;
  lookupKey: string | null;
  interval: BillingInterval;
  intervalCount: number;
  usageType: "metered" | "licensed";
  meter: string | null;
};

type ItemRec = {
  id: string;
  created: number;
  price: PriceRec;
  quantity: number | null;
  periodStart: number;
  periodEnd: number;
  /** periodEnd === periodBoundary(anchor, …, k) */
  k: number;
};

type SubRec = {
  id: string;
  customer: string;
  created: number;
  startDate: number;
  anchor: number;
  status: SubscriptionStatus;
  canceledAt: number | null;
  endedAt: number | null;
  items: ItemRec[];
  latestInvoice: string | null;
};

type LineRec = {
  id: string;
  item: ItemRec;
  start: number;
  end: number;
  /** set for licensed lines and once the invoice is finalized; null: live meter aggregate */
  quantity: bigint | null;
};

type InvoiceRec = {
  id: string;
  customer: string;
  subscription: string;
  created: number;
  billingReason: "subscription_cycle" | "upcoming";
  periodStart: number;
  periodEnd: number;
  status: "draft" | "open";
  finalizesAt: number | null;
  finalizedAt: number | null;
  number: string | null;
  lines: LineRec[];
};

type BillingDeps = {
  now: () => number;
  nowS: () => number;
  meters: readonly Meter[];
  recorded: readonly RecordedMeterEvent[];
  customerExists: (id: string) => boolean;
  customerObject: (id: string) => Params;
  graceSeconds?: number;
  autoSubscribe?: boolean;
};

type BillingRoute = {
  method: "GET" | "POST";
  pattern: string;
  handle: (ctx: RouteContext) => Reply;
};

function checkGrace(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > MAX_INVOICE_GRACE_S) {
    throw new Error(`invoice grace must be a whole number of seconds in 0..${MAX_INVOICE_GRACE_S}`);
  }
  return seconds;
}

const missingRef = (kind: string, id: string, param: string) =>
  invalid(`No such ${kind}: '${id}'`, { code: "resource_missing", param });

function optionalBoolean(params: Params, key: string): boolean | undefined {
  const v = optionalString(params, key);
  if (v === undefined) return undefined;
  if (v === "true") return true;
  if (v === "false") return false;
  throw invalid(`Invalid boolean: ${v}`, { param: key });
}

function optionalEnum<T extends string>(
  params: Params,
  key: string,
  values: readonly T[],
  label = key,
): T | undefined {
  const v = optionalString(params, key);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) {
    throw invalid(`Invalid ${label}: must be one of ${values.join(", ")}`, { param: label });
  }
  return v as T;
}

function optionalStringList(params: Params, key: string): string[] | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  const list = typeof v === "string" ? [v] : Array.isArray(v) ? v : undefined;
  if (!list || list.some((s) => typeof s !== "string")) {
    throw invalid(`Invalid array: ${key}`, { param: key });
  }
  return list as string[];
}

/** `key=123` or `key[gt|gte|lt|lte]=123` (Stripe's RangeQueryParam) as a predicate. */
function rangeFilter(params: Params, key: string): ((v: number) => boolean) | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (typeof v === "string") {
    const n = optionalInteger(params, key) as number;
    return (x) => x === n;
  }
  const range = optionalObject(params, key) as Params;
  const bounds: Record<string, number> = {};
  for (const op of Object.keys(range)) {
    if (!["gt", "gte", "lt", "lte"].includes(op)) {
      throw invalid(`Received unknown parameter: ${key}[${op}]`, { param: `${key}[${op}]` });
    }
    const n = optionalInteger(range, op);
    if (n === undefined)
      throw invalid(`Invalid integer: ${key}[${op}]`, { param: `${key}[${op}]` });
    bounds[op] = n;
  }
  const { gt, gte, lt, lte } = bounds;
  return (x) =>
    (gt === undefined || x > gt) &&
    (gte === undefined || x >= gte) &&
    (lt === undefined || x < lt) &&
    (lte === undefined || x <= lte);
}

/** Newest first, like Stripe lists: by `created`, later insertions first on ties. */
function newestFirst<T extends { created: number }>(items: Iterable<T>): T[] {
  return [...items].reverse().sort((a, b) => b.created - a.created);
}

function createBilling(deps: BillingDeps) {
  const { nowS } = deps;
  let graceSeconds = checkGrace(deps.graceSeconds ?? DEFAULT_INVOICE_GRACE_S);
  let invoiceNumber = 0;
  const prices = new Map<string, PriceRec>();
  const subs = new Map<string, SubRec>();
  const items = new Map<string, { sub: SubRec; item: ItemRec }>();
  const invoices: InvoiceRec[] = [];
  const invoicesById = new Map<string, InvoiceRec>();

  const boundaryOf = (sub: SubRec, price: PriceRec, k: number) =>
    periodBoundary(sub.anchor, price.interval, price.intervalCount, k);
  const indexAfter = (sub: SubRec, price: PriceRec, t: number) =>
    nextBoundaryIndex(sub.anchor, price.interval, price.intervalCount, t);

  /**
   * The meter aggregate of `customer` over [start, end). With `cutoffMs`, only what had been
   * recorded (and not cancelled) before that instant: the quantity frozen at finalization.
   * Negative totals bill 0.
   */
  function usage(
    meterId: string | null,
    customer: string,
    start: number,
    end: number,
    cutoffMs?: number,
  ): bigint {
    const meter = deps.meters.find((m) => m.id === meterId);
    if (!meter) return 0n;
    const counted = (e: RecordedMeterEvent) =>
      cutoffMs === undefined
        ? e.cancelledAt === undefined
        : e.receivedAt < cutoffMs && (e.cancelledAt === undefined || e.cancelledAt >= cutoffMs);
    const events = deps.recorded.filter(
      (e) =>
        e.eventName === meter.event_name &&
        e.customer === customer &&
        e.timestamp >= start &&
        e.timestamp < end &&
        counted(e),
    );
    const formula = meter.default_aggregation.formula;
    const total =
      formula === "sum"
        ? events.reduce((sum, e) => sum + BigInt(Math.trunc(e.value)), 0n)
        : BigInt(Math.trunc(aggregate(formula, events)));
    return total < 0n ? 0n : total;
  }

  function rollover(sub: SubRec, at: number): void {
    const lines: LineRec[] = [];
    let periodStart = at;
    for (const item of sub.items) {
      if (item.periodEnd !== at) continue;
      const endedStart = item.periodStart;
      periodStart = Math.min(periodStart, endedStart);
      item.k += 1;
      item.periodStart = at;
      item.periodEnd = boundaryOf(sub, item.price, item.k);
      lines.push(
        item.price.usageType === "metered"
          ? { id: newId("il"), item, start: endedStart, end: at, quantity: null }
          : {
              id: newId("il"),
              item,
              start: at,
              end: item.periodEnd,
              quantity: BigInt(item.quantity ?? 1),
            },
      );
    }
    const invoice: InvoiceRec = {
      id: newId("in"),
      customer: sub.customer,
      subscription: sub.id,
      created: at,
      billingReason: "subscription_cycle",
      periodStart,
      periodEnd: at,
      status: "draft",
      finalizesAt: at + graceSeconds,
      finalizedAt: null,
      number: null,
      lines,
    };
    invoices.push(invoice);
    invoicesById.set(invoice.id, invoice);
    sub.latestInvoice = invoice.id;
  }

  function finalize(invoice: InvoiceRec): void {
    const at = invoice.finalizesAt ?? nowS();
    for (const line of invoice.lines) {
      line.quantity ??= usage(
        line.item.price.meter,
        invoice.customer,
        line.start,
        line.end,
        at * 1000,
      );
    }
    invoice.status = "open";
    invoice.finalizedAt = at;
    invoice.finalizesAt = null;
    invoice.number = `EMU-${String(++invoiceNumber).padStart(4, "0")}`;
  }

  /** Runs every rollover and finalization due by now, earliest first (finalizations on ties). */
  function advance(): void {
    const t = nowS();
    for (;;) {
      let due: { at: number; run: () => void } | undefined;
      for (const invoice of invoices) {
        const at = invoice.finalizesAt;
        if (invoice.status !== "draft" || at === null || at > t) continue;
        if (due === undefined || at < due.at) due = { at, run: () => finalize(invoice) };
      }
      for (const sub of subs.values()) {
        if (!ADVANCING.has(sub.status)) continue;
        const at = Math.min(...sub.items.map((i) => i.periodEnd));
        if (at > t) continue;
        if (due === undefined || at < due.at) due = { at, run: () => rollover(sub, at) };
      }
      if (due === undefined) return;
      due.run();
    }
  }

  function previewOf(sub: SubRec): InvoiceRec {
    const end = Math.min(...sub.items.map((i) => i.periodEnd));
    const next = sub.items.filter((i) => i.periodEnd === end);
    const lines: LineRec[] = next.map((item) =>
      item.price.usageType === "metered"
        ? { id: newId("il_tmp"), item, start: item.periodStart, end, quantity: null }
        : {
            id: newId("il_tmp"),
            item,
            start: end,
            end: boundaryOf(sub, item.price, item.k + 1),
            quantity: BigInt(item.quantity ?? 1),
          },
    );
    return {
      id: newId("upcoming_in"),
      customer: sub.customer,
      subscription: sub.id,
      created: nowS(),
      billingReason: "upcoming",
      periodStart: Math.min(...next.map((i) => i.periodStart)),
      periodEnd: end,
      status: "draft",
      finalizesAt: null,
      finalizedAt: null,
      number: null,
      lines,
    };
  }

  // ---- rendering (fresh objects every time: expansion edits them in place) ----

  function priceJson(p: PriceRec): EmulatorPrice {
    return {
      id: p.id,
      object: "price",
      active: p.active,
      billing_scheme: "per_unit",
      created: p.created,
      currency: p.currency,
      custom_unit_amount: null,
      livemode: false,
      lookup_key: p.lookupKey,
      metadata: {},
      nickname: p.nickname,
      product: p.product,
      recurring: {
        interval: p.interval,
        interval_count: p.intervalCount,
        meter: p.meter,
        trial_period_days: null,
        usage_type: p.usageType,
      },
      tax_behavior: "unspecified",
      tiers_mode: null,
      transform_quantity: null,
      type: "recurring",
      unit_amount: null,
      unit_amount_decimal: null,
    };
  }

  function planJson(p: PriceRec) {
    return {
      id: p.id,
      object: "plan",
      active: p.active,
      amount: null,
      amount_decimal: null,
      billing_scheme: "per_unit",
      created: p.created,
      currency: p.currency,
      interval: p.interval,
      interval_count: p.intervalCount,
      livemode: false,
      metadata: {},
      meter: p.meter,
      nickname: p.nickname,
      product: p.product,
      tiers_mode: null,
      transform_usage: null,
      trial_period_days: null,
      usage_type: p.usageType,
    };
  }

  function itemJson(sub: SubRec, item: ItemRec): EmulatorSubscriptionItem {
    return {
      id: item.id,
      object: "subscription_item",
      billing_thresholds: null,
      created: item.created,
      current_period_end: item.periodEnd,
      current_period_start: item.periodStart,
      discounts: [],
      metadata: {},
      plan: planJson(item.price),
      price: priceJson(item.price),
      ...(item.quantity === null ? {} : { quantity: item.quantity }),
      subscription: sub.id,
      tax_rates: [],
    };
  }

  function subJson(sub: SubRec): EmulatorSubscription {
    const data = sub.items.map((i) => itemJson(sub, i));
    return {
      id: sub.id,
      object: "subscription",
      application: null,
      application_fee_percent: null,
      automatic_tax: { disabled_reason: null, enabled: false, liability: null },
      billing_cycle_anchor: sub.anchor,
      billing_cycle_anchor_config: null,
      billing_mode: {
        flexible: { proration_discounts: "included" },
        type: "flexible",
        updated_at: sub.created,
      },
      billing_thresholds: null,
      cancel_at: null,
      cancel_at_period_end: false,
      canceled_at: sub.canceledAt,
      cancellation_details: { comment: null, feedback: null, reason: null },
      collection_method: "charge_automatically",
      created: sub.created,
      currency: sub.items[0]?.price.currency ?? "usd",
      customer: sub.customer,
      customer_account: null,
      days_until_due: null,
      default_payment_method: null,
      default_source: null,
      default_tax_rates: [],
      description: null,
      discounts: [],
      ended_at: sub.endedAt,
      invoice_settings: { account_tax_ids: null, issuer: { type: "self" } },
      items: {
        object: "list",
        data: data.slice(0, EMBEDDED_ITEMS),
        has_more: data.length > EMBEDDED_ITEMS,
        total_count: data.length,
        url: `/v1/subscription_items?subscription=${sub.id}`,
      },
      latest_invoice: sub.latestInvoice,
      livemode: false,
      metadata: {},
      next_pending_invoice_item_invoice: null,
      on_behalf_of: null,
      pause_collection: null,
      payment_settings: {
        payment_method_options: null,
        payment_method_types: null,
        save_default_payment_method: "off",
      },
      pending_invoice_item_interval: null,
      pending_setup_intent: null,
      pending_update: null,
      schedule: null,
      start_date: sub.startDate,
      status: sub.status,
      test_clock: null,
      transfer_data: null,
      trial_end: null,
      trial_settings: { end_behavior: { missing_payment_method: "create_invoice" } },
      trial_start: null,
    };
  }

  function lineJson(invoice: InvoiceRec, line: LineRec): EmulatorInvoiceLine {
    const price = line.item.price;
    const quantity = line.quantity ?? usage(price.meter, invoice.customer, line.start, line.end);
    return {
      id: line.id,
      object: "line_item",
      amount: 0,
      currency: price.currency,
      description: `${quantity} × ${price.nickname ?? price.product}`,
      discount_amounts: [],
      discountable: true,
      discounts: [],
      invoice: invoice.id,
      livemode: false,
      metadata: {},
      parent: {
        type: "subscription_item_details",
        invoice_item_details: null,
        subscription_item_details: {
          invoice_item: null,
          proration: false,
          proration_details: { credited_items: null },
          subscription: invoice.subscription,
          subscription_item: line.item.id,
        },
      },
      period: { start: line.start, end: line.end },
      pretax_credit_amounts: [],
      pricing: {
        type: "price_details",
        price_details: { price: price.id, product: price.product },
        unit_amount_decimal: null,
      },
      quantity: Number(quantity),
      quantity_decimal: quantity.toString(),
      subscription: invoice.subscription,
      subtotal: 0,
      taxes: [],
    };
  }

  function invoiceJson(invoice: InvoiceRec, embedded = EMBEDDED_LINES): EmulatorInvoice {
    const customer = deps.customerObject(invoice.customer);
    const lines = invoice.lines.map((l) => lineJson(invoice, l));
    const draft = invoice.status === "draft";
    return {
      id: invoice.id,
      object: "invoice",
      account_country: "US",
      account_name: "Stripe emulator",
      account_tax_ids: null,
      amount_due: 0,
      amount_overpaid: 0,
      amount_paid: 0,
      amount_remaining: 0,
      amount_shipping: 0,
      application: null,
      attempt_count: 0,
      attempted: false,
      auto_advance: draft,
      automatic_tax: {
        disabled_reason: null,
        enabled: false,
        liability: null,
        provider: null,
        status: null,
      },
      automatically_finalizes_at: invoice.finalizesAt,
      billing_reason: invoice.billingReason,
      collection_method: "charge_automatically",
      created: invoice.created,
      currency: invoice.lines[0]?.item.price.currency ?? "usd",
      custom_fields: null,
      customer: invoice.customer,
      customer_account: null,
      customer_address: null,
      customer_email: customer.email ?? null,
      customer_name: customer.name ?? null,
      customer_phone: null,
      customer_shipping: null,
      customer_tax_exempt: "none",
      customer_tax_ids: [],
      default_payment_method: null,
      default_source: null,
      default_tax_rates: [],
      description: null,
      discounts: [],
      due_date: null,
      effective_at: invoice.finalizedAt,
      ending_balance: draft ? null : 0,
      footer: null,
      from_invoice: null,
      hosted_invoice_url: null,
      invoice_pdf: null,
      issuer: { type: "self" },
      last_finalization_error: null,
      latest_revision: null,
      lines: {
        object: "list",
        data: lines.slice(0, embedded),
        has_more: lines.length > embedded,
        total_count: lines.length,
        url: `/v1/invoices/${invoice.id}/lines`,
      },
      livemode: false,
      metadata: {},
      next_payment_attempt: null,
      number: invoice.number,
      on_behalf_of: null,
      parent: {
        type: "subscription_details",
        quote_details: null,
        subscription_details: { metadata: {}, subscription: invoice.subscription },
      },
      payment_settings: {
        default_mandate: null,
        payment_method_options: null,
        payment_method_types: null,
      },
      period_end: invoice.periodEnd,
      period_start: invoice.periodStart,
      post_payment_credit_notes_amount: 0,
      pre_payment_credit_notes_amount: 0,
      receipt_number: null,
      rendering: null,
      shipping_cost: null,
      shipping_details: null,
      starting_balance: 0,
      statement_descriptor: null,
      status: invoice.status,
      status_transitions: {
        finalized_at: invoice.finalizedAt,
        marked_uncollectible_at: null,
        paid_at: null,
        voided_at: null,
      },
      subtotal: 0,
      subtotal_excluding_tax: 0,
      test_clock: null,
      total: 0,
      total_discount_amounts: [],
      total_excluding_tax: 0,
      total_pretax_credit_amounts: [],
      total_taxes: [],
      webhooks_delivered_at: invoice.created,
    };
  }

  // ---- expand[] ----

  function resolve(id: string): unknown {
    const price = prices.get(id);
    if (price) return priceJson(price);
    const sub = subs.get(id);
    if (sub) return subJson(sub);
    const invoice = invoicesById.get(id);
    if (invoice) return invoiceJson(invoice);
    if (deps.customerExists(id)) return deps.customerObject(id);
    return undefined;
  }

  function expandAt(node: unknown, segments: string[], path: string): void {
    if (Array.isArray(node)) {
      for (const n of node) expandAt(n, segments, path);
      return;
    }
    const [head, ...rest] = segments;
    if (typeof node !== "object" || node === null || head === undefined) return;
    const obj = node as Params;
    const cannot = invalid(`This property cannot be expanded (${path}).`, { param: "expand" });
    if (!(head in obj)) throw cannot;
    if (rest.length > 0) {
      expandAt(obj[head], rest, path);
      return;
    }
    if (!EXPANDABLE.has(head)) throw cannot;
    const v = obj[head];
    if (typeof v === "string") obj[head] = resolve(v) ?? v;
  }

  function expanded<T>(body: T, params: Params): T {
    for (const path of optionalStringList(params, "expand") ?? []) {
      const segments = path.split(".");
      if (segments.length > MAX_EXPAND_DEPTH) {
        throw invalid(
          `You cannot expand more than ${MAX_EXPAND_DEPTH} levels of a property. Property: ${path}`,
          { param: "expand" },
        );
      }
      expandAt(body, segments, path);
    }
    return body;
  }

  // ---- endpoints ----

  const getSub = (id: string) => {
    const sub = subs.get(id);
    if (!sub) throw noSuch("subscription", id);
    return sub;
  };
  const getInvoice = (id: string) => {
    const invoice = invoicesById.get(id);
    if (!invoice) throw noSuch("invoice", id);
    return invoice;
  };
  const knownCustomer = (params: Params, key: string) => {
    const id = optionalString(params, key);
    if (id !== undefined && !deps.customerExists(id)) throw missingRef("customer", id, key);
    return id;
  };
  const removedUpcoming: BillingRoute["handle"] = ({ method, path }) => {
    throw new StripeHttpError(
      404,
      "invalid_request_error",
      `Unrecognized request URL (${method}: ${path}). The upcoming invoice endpoints were removed in API version 2025-03-31.basil: use POST /v1/invoices/create_preview.`,
    );
  };

  function listPrices({ params, path }: RouteContext): Reply {
    rejectUnknownParams(params, [
      "active",
      "currency",
      "lookup_keys",
      "product",
      "recurring",
      "type",
      "created",
      "limit",
      "starting_after",
      "ending_before",
    ]);
    // "Returns a list of your active prices … For the list of inactive prices, set active to false."
    const active = optionalBoolean(params, "active") ?? true;
    const currency = optionalString(params, "currency");
    const product = optionalString(params, "product");
    const type = optionalEnum(params, "type", ["recurring", "one_time"]);
    const lookupKeys = optionalStringList(params, "lookup_keys");
    if (lookupKeys && lookupKeys.length > 10) {
      throw invalid("You can specify up to 10 lookup_keys.", { param: "lookup_keys" });
    }
    const created = rangeFilter(params, "created");
    const recurring = optionalObject(params, "recurring") ?? {};
    for (const key of Object.keys(recurring)) {
      if (!["interval", "meter", "usage_type"].includes(key)) {
        throw invalid(`Received unknown parameter: recurring[${key}]`, {
          param: `recurring[${key}]`,
        });
      }
    }
    const interval = optionalEnum(
      recurring,
      "interval",
      ["day", "week", "month", "year"],
      "recurring[interval]",
    );
    const meter = optionalString(recurring, "meter");
    const usageType = optionalEnum(
      recurring,
      "usage_type",
      ["metered", "licensed"],
      "recurring[usage_type]",
    );
    const list = newestFirst(prices.values()).filter(
      (p) =>
        p.active === active &&
        type !== "one_time" &&
        (currency === undefined || p.currency === currency) &&
        (product === undefined || p.product === product) &&
        (lookupKeys === undefined || (p.lookupKey !== null && lookupKeys.includes(p.lookupKey))) &&
        (created === undefined || created(p.created)) &&
        (interval === undefined || p.interval === interval) &&
        (meter === undefined || p.meter === meter) &&
        (usageType === undefined || p.usageType === usageType),
    );
    return { status: 200, body: expanded(paginate(list.map(priceJson), params, path), params) };
  }

  function listSubscriptions({ params, path }: RouteContext): Reply {
    rejectUnknownParams(params, [
      "customer",
      "price",
      "plan",
      "status",
      "created",
      "current_period_start",
      "current_period_end",
      "limit",
      "starting_after",
      "ending_before",
    ]);
    const customer = knownCustomer(params, "customer");
    if (deps.autoSubscribe && customer !== undefined) subscribeOnFirstSight(customer);
    const priceParam = params.price !== undefined ? "price" : "plan";
    const price = optionalString(params, priceParam);
    if (price !== undefined && !prices.has(price)) throw missingRef("price", price, priceParam);
    const status = optionalEnum(params, "status", ["all", "ended", ...SUBSCRIPTION_STATUSES]);
    const created = rangeFilter(params, "created");
    // Stripe: the minimum item current_period_end / maximum item current_period_start.
    const periodEnd = rangeFilter(params, "current_period_end");
    const periodStart = rangeFilter(params, "current_period_start");
    const statusOk = (s: SubscriptionStatus) =>
      status === undefined
        ? s !== "canceled"
        : status === "all"
          ? true
          : status === "ended"
            ? TERMINAL.has(s)
            : s === status;
    const list = newestFirst(subs.values()).filter(
      (s) =>
        statusOk(s.status) &&
        (customer === undefined || s.customer === customer) &&
        (price === undefined || s.items.some((i) => i.price.id === price)) &&
        (created === undefined || created(s.created)) &&
        (periodEnd === undefined || periodEnd(Math.min(...s.items.map((i) => i.periodEnd)))) &&
        (periodStart === undefined || periodStart(Math.max(...s.items.map((i) => i.periodStart)))),
    );
    return { status: 200, body: expanded(paginate(list.map(subJson), params, path), params) };
  }

  function listSubscriptionItems({ params, path }: RouteContext): Reply {
    rejectUnknownParams(params, ["subscription", "limit", "starting_after", "ending_before"]);
    const id = requiredString(params, "subscription");
    const sub = subs.get(id);
    if (!sub) throw missingRef("subscription", id, "subscription");
    const list = sub.items.map((i) => itemJson(sub, i));
    return { status: 200, body: expanded(paginate(list, params, path), params) };
  }

  function listInvoices({ params, path }: RouteContext): Reply {
    rejectUnknownParams(params, [
      "customer",
      "subscription",
      "status",
      "created",
      "limit",
      "starting_after",
      "ending_before",
    ]);
    const customer = knownCustomer(params, "customer");
    const subscription = optionalString(params, "subscription");
    if (subscription !== undefined && !subs.has(subscription)) {
      throw missingRef("subscription", subscription, "subscription");
    }
    const status = optionalEnum(params, "status", [
      "draft",
      "open",
      "paid",
      "uncollectible",
      "void",
    ]);
    const created = rangeFilter(params, "created");
    const list = newestFirst(invoices).filter(
      (i) =>
        (customer === undefined || i.customer === customer) &&
        (subscription === undefined || i.subscription === subscription) &&
        (status === undefined || i.status === status) &&
        (created === undefined || created(i.created)),
    );
    const data = list.map((i) => invoiceJson(i));
    return { status: 200, body: expanded(paginate(data, params, path), params) };
  }

  function listInvoiceLines({ pathParams, params, path }: RouteContext): Reply {
    rejectUnknownParams(params, ["limit", "starting_after", "ending_before"]);
    const invoice = getInvoice(pathParams[0] ?? "");
    const lines = invoice.lines.map((l) => lineJson(invoice, l));
    return { status: 200, body: expanded(paginate(lines, params, path), params) };
  }

  function createPreview({ params }: RouteContext): Reply {
    rejectUnknownParams(params, ["customer", "subscription", "preview_mode"]);
    const id = optionalString(params, "subscription");
    if (id === undefined || id === "") {
      throw invalid(
        "Missing required param: subscription. Since 2025-03-31.basil a preview needs specific subscription details along with the customer; the emulator models `subscription`.",
        { code: "parameter_missing", param: "subscription" },
      );
    }
    const sub = subs.get(id);
    if (!sub) throw missingRef("subscription", id, "subscription");
    const customer = knownCustomer(params, "customer");
    if (customer !== undefined && customer !== sub.customer) {
      throw invalid(`The subscription ${sub.id} does not belong to customer ${customer}.`, {
        param: "subscription",
      });
    }
    const mode = optionalEnum(params, "preview_mode", ["next", "recurring"]);
    if (mode === "recurring") {
      throw invalid("The emulator models preview_mode=next only.", { param: "preview_mode" });
    }
    if (TERMINAL.has(sub.status)) {
      throw invalid(`No upcoming invoices for customer: ${sub.customer}`, {
        code: "invoice_upcoming_none",
      });
    }
    return { status: 200, body: expanded(invoiceJson(previewOf(sub)), params) };
  }

  const routes: BillingRoute[] = [
    { method: "GET", pattern: "/v1/prices", handle: listPrices },
    {
      method: "GET",
      pattern: "/v1/prices/:id",
      handle: ({ pathParams, params }) => {
        rejectUnknownParams(params, []);
        const price = prices.get(pathParams[0] ?? "");
        if (!price) throw noSuch("price", pathParams[0] ?? "");
        return { status: 200, body: expanded(priceJson(price), params) };
      },
    },
    { method: "GET", pattern: "/v1/subscriptions", handle: listSubscriptions },
    {
      method: "GET",
      pattern: "/v1/subscriptions/:id",
      handle: ({ pathParams, params }) => {
        rejectUnknownParams(params, []);
        return { status: 200, body: expanded(subJson(getSub(pathParams[0] ?? "")), params) };
      },
    },
    { method: "GET", pattern: "/v1/subscription_items", handle: listSubscriptionItems },
    {
      method: "GET",
      pattern: "/v1/subscription_items/:id",
      handle: ({ pathParams, params }) => {
        rejectUnknownParams(params, []);
        const found = items.get(pathParams[0] ?? "");
        if (!found) throw noSuch("subscription_item", pathParams[0] ?? "");
        return { status: 200, body: expanded(itemJson(found.sub, found.item), params) };
      },
    },
    { method: "GET", pattern: "/v1/invoices", handle: listInvoices },
    { method: "POST", pattern: "/v1/invoices/create_preview", handle: createPreview },
    { method: "GET", pattern: "/v1/invoices/upcoming", handle: removedUpcoming },
    { method: "GET", pattern: "/v1/invoices/upcoming/lines", handle: removedUpcoming },
    {
      method: "GET",
      pattern: "/v1/invoices/:id",
      handle: ({ pathParams, params }) => {
        rejectUnknownParams(params, []);
        return {
          status: 200,
          body: expanded(invoiceJson(getInvoice(pathParams[0] ?? "")), params),
        };
      },
    },
    { method: "GET", pattern: "/v1/invoices/:id/lines", handle: listInvoiceLines },
  ];

  // ---- autoSubscribe ----

  function subscribeOnFirstSight(customer: string): void {
    if ([...subs.values()].some((x) => x.customer === customer)) return;
    if (deps.meters.length === 0) return;
    const price =
      [...prices.values()].find((p) => p.active && p.usageType === "metered" && p.meter !== null) ??
      addPrice({});
    const d = new Date(deps.now());
    addSubscription({
      customer,
      price: price.id,
      anchor: Date.UTC(2020, 0, 1),
      startDate: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1),
    });
  }

  // ---- test helpers ----

  function addPrice(input: AddPriceInput = {}): EmulatorPrice {
    advance();
    const id = input.id ?? newId("price");
    if (prices.has(id)) throw new Error(`addPrice: price ${id} already exists`);
    const usageType = input.usageType ?? "metered";
    const interval = input.interval ?? "month";
    const max = MAX_INTERVAL_COUNT[interval];
    if (max === undefined) throw new Error(`addPrice: unknown interval ${interval}`);
    const intervalCount = input.intervalCount ?? 1;
    if (!Number.isInteger(intervalCount) || intervalCount < 1 || intervalCount > max) {
      throw new Error(`addPrice: intervalCount must be 1..${max} for ${interval}`);
    }
    let meter: string | null = null;
    if (usageType === "metered") {
      const m =
        input.meter !== undefined
          ? deps.meters.find((x) => x.id === input.meter)
          : input.eventName !== undefined
            ? deps.meters.find((x) => x.event_name === input.eventName)
            : deps.meters[0];
      if (!m) {
        throw new Error(
          `addPrice: no meter ${input.meter ?? input.eventName ?? "exists"}: create it first`,
        );
      }
      if (m.status !== "active") {
        throw new Error(`addPrice: meter ${m.id} is inactive and cannot be attached to a price`);
      }
      meter = m.id;
    } else if (input.meter !== undefined || input.eventName !== undefined) {
      throw new Error("addPrice: a licensed price has no meter");
    }
    const price: PriceRec = {
      id,
      created: nowS(),
      active: input.active ?? true,
      product: input.product ?? newId("prod"),
      currency: input.currency ?? "usd",
      nickname: input.nickname ?? null,
      lookupKey: input.lookupKey ?? null,
      interval,
      intervalCount,
      usageType,
      meter,
    };
    prices.set(id, price);
    return priceJson(price);
  }

  function setPriceActive(id: string, active: boolean): EmulatorPrice {
    advance();
    const price = prices.get(id);
    if (!price) throw new Error(`setPriceActive: no price ${id}`);
    price.active = active;
    return priceJson(price);
  }

  function addSubscription(input: AddSubscriptionInput): EmulatorSubscription {
    advance();
    if (!deps.customerExists(input.customer)) {
      throw new Error(
        `addSubscription: unknown customer ${input.customer}: addCustomer() it first (or start the emulator with acceptAnyCustomer)`,
      );
    }
    const id = input.id ?? newId("sub");
    if (subs.has(id)) throw new Error(`addSubscription: subscription ${id} already exists`);
    const priceIds = [...(input.price === undefined ? [] : [input.price]), ...(input.prices ?? [])];
    if (priceIds.length === 0) throw new Error("addSubscription: give a price or prices");
    if (new Set(priceIds).size !== priceIds.length) {
      throw new Error("addSubscription: a price may appear on one item only");
    }
    const recs = priceIds.map((p) => {
      const price = prices.get(p);
      if (!price) throw new Error(`addSubscription: no price ${p}`);
      if (!price.active) throw new Error(`addSubscription: price ${p} is inactive`);
      return price;
    });
    if (!Number.isFinite(input.anchor)) throw new Error("addSubscription: anchor (ms) is required");
    const status = input.status ?? "active";
    if (!SUBSCRIPTION_STATUSES.includes(status)) {
      throw new Error(`addSubscription: unknown status ${status}`);
    }
    const anchor = Math.floor(input.anchor / 1000);
    const startDate = Math.floor((input.startDate ?? Math.min(input.anchor, deps.now())) / 1000);
    const t = nowS();
    const sub: SubRec = {
      id,
      customer: input.customer,
      created: t,
      startDate,
      anchor,
      status,
      canceledAt: status === "canceled" ? t : null,
      endedAt: TERMINAL.has(status) ? t : null,
      items: [],
      latestInvoice: null,
    };
    for (const price of recs) {
      const k = indexAfter(sub, price, startDate);
      const item: ItemRec = {
        id: newId("si"),
        created: t,
        price,
        quantity: price.usageType === "licensed" ? 1 : null,
        periodStart: startDate,
        periodEnd: boundaryOf(sub, price, k),
        k,
      };
      sub.items.push(item);
      items.set(item.id, { sub, item });
    }
    subs.set(id, sub);
    advance();
    return subJson(sub);
  }

  function setSubscriptionStatus(id: string, status: SubscriptionStatus): EmulatorSubscription {
    advance();
    const sub = subs.get(id);
    if (!sub) throw new Error(`setSubscriptionStatus: no subscription ${id}`);
    if (!SUBSCRIPTION_STATUSES.includes(status)) {
      throw new Error(`setSubscriptionStatus: unknown status ${status}`);
    }
    if (TERMINAL.has(sub.status) && status !== sub.status) {
      throw new Error(`setSubscriptionStatus: ${id} is ${sub.status}, which is terminal`);
    }
    const t = nowS();
    if (!ADVANCING.has(sub.status) && ADVANCING.has(status)) {
      // Resuming with the anchor unchanged: periods that ended while it was held are neither
      // billed nor replayed; each such item restarts now and ends on the anchor's next boundary.
      for (const item of sub.items) {
        if (item.periodEnd > t) continue;
        item.k = indexAfter(sub, item.price, t);
        item.periodStart = t;
        item.periodEnd = boundaryOf(sub, item.price, item.k);
      }
    }
    if (TERMINAL.has(status) && !TERMINAL.has(sub.status)) {
      sub.canceledAt = status === "canceled" ? t : null;
      sub.endedAt = t;
    }
    sub.status = status;
    return subJson(sub);
  }

  function setInvoiceGraceSeconds(seconds: number): void {
    advance();
    graceSeconds = checkGrace(seconds);
  }

  function listAllInvoices(filter: InvoiceFilter = {}): EmulatorInvoice[] {
    advance();
    return invoices
      .filter(
        (i) =>
          (filter.customer === undefined || i.customer === filter.customer) &&
          (filter.subscription === undefined || i.subscription === filter.subscription) &&
          (filter.status === undefined || i.status === filter.status) &&
          (filter.billingReason === undefined || i.billingReason === filter.billingReason),
      )
      .map((i) => invoiceJson(i, Number.POSITIVE_INFINITY));
  }

  return {
    routes,
    advance,
    addPrice,
    setPriceActive,
    addSubscription,
    setSubscriptionStatus,
    setInvoiceGraceSeconds,
    invoiceGraceSeconds: () => graceSeconds,
    invoices: listAllInvoices,
  };
}

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
    idempotencyErrors: 0,
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

  const billing = createBilling({
    now,
    nowS,
    meters,
    recorded,
    customerExists,
    customerObject,
    graceSeconds: opts.invoiceGraceSeconds,
    autoSubscribe: opts.autoSubscribe ?? false,
  });

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
    if (!customerExists(customer) || faults.refuseCustomers?.includes(customer)) {
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
    ...billing.routes.map((r) => route(r.method, r.pattern, r.handle)),
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
      // Periods roll over and drafts finalize lazily, from the emulator clock, before anything else.
      billing.advance();
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
            stats.idempotencyErrors++;
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
      billing.advance();
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
    addPrice: billing.addPrice,
    setPriceActive: billing.setPriceActive,
    addSubscription: billing.addSubscription,
    setSubscriptionStatus: billing.setSubscriptionStatus,
    setInvoiceGraceSeconds: billing.setInvoiceGraceSeconds,
    invoiceGraceSeconds: billing.invoiceGraceSeconds,
    invoices: billing.invoices,
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
      "invoice-grace-seconds": { type: "string" },
      "auto-subscribe": { type: "boolean", default: false },
    },
  });
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const emu = await startStripeEmulator({
    port: Number(values.port),
    apiKey: values["api-key"],
    acceptAnyCustomer: values["accept-any-customer"],
    rateLimitPerSecond: num(values["rate-limit"]),
    clockOffsetMs: num(values["clock-offset-ms"]),
    invoiceGraceSeconds: num(values["invoice-grace-seconds"]),
    autoSubscribe: values["auto-subscribe"],
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
