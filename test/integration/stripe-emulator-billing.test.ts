import Stripe from "stripe";
import { afterEach, describe, expect, it } from "vitest";
import {
  type BillingInterval,
  type StripeEmulator,
  type StripeEmulatorOptions,
  startStripeEmulator,
} from "../../scripts/stripe-emulator.ts";

// Billing periods, cycle invoices and previews of the Stripe emulator, through the real SDK
// (/work/shared/reference/stripe-billing-periods.md, "What an emulator must model").

type StripeError = InstanceType<typeof Stripe.errors.StripeError>;

const EVENT = "sim_data_bytes";
const OTHER_EVENT = "sim_sms_count";
const HOUR = 3600;

const ms = (iso: string) => Date.parse(iso);
const sec = (iso: string) => Date.parse(iso) / 1000;
const iso = (s: number) => new Date(s * 1000).toISOString();

let clock = ms("2026-02-10T12:00:00Z");
const opened: StripeEmulator[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((e) => e.close()));
  clock = ms("2026-02-10T12:00:00Z");
});

async function billingSetup(opts: StripeEmulatorOptions = {}) {
  const emu = await startStripeEmulator({ now: () => clock, ...opts });
  opened.push(emu);
  for (const c of ["cus_1", "cus_2", "cus_3"]) emu.addCustomer(c);
  const stripe = new Stripe(emu.apiKey, { ...emu.stripeConfig(), maxNetworkRetries: 0 });
  const meter = await stripe.billing.meters.create({
    display_name: "SIM data",
    event_name: EVENT,
    default_aggregation: { formula: "sum" },
  });
  return { emu, stripe, meter };
}

function send(stripe: Stripe, customer: string, value: number, timestamp?: number, id?: string) {
  return stripe.billing.meterEvents.create({
    event_name: EVENT,
    payload: { stripe_customer_id: customer, value: String(value) },
    ...(timestamp === undefined ? {} : { timestamp }),
    ...(id === undefined ? {} : { identifier: id }),
  });
}

async function failure(p: Promise<unknown>): Promise<StripeError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof Stripe.errors.StripeError) return e;
    throw e;
  }
  throw new Error("expected the call to fail");
}

const firstLine = (invoice: Stripe.Invoice) => {
  const line = invoice.lines.data[0];
  if (!line) throw new Error(`invoice ${invoice.id} has no lines`);
  return line;
};
const quantities = (invoice: Stripe.Invoice) =>
  invoice.lines.data.map((l) => [l.quantity, String(l.quantity_decimal)]);

describe("stripe emulator billing: item periods", () => {
  type Row = {
    name: string;
    anchor: string;
    interval?: BillingInterval;
    count?: number;
    boundaries: string[];
  };
  const rows: Row[] = [
    {
      name: "monthly, anchored on the 1st at midnight",
      anchor: "2026-01-01T00:00:00Z",
      boundaries: ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"],
    },
    {
      name: "monthly, anchored on the 15th, time of day kept",
      anchor: "2026-01-15T13:45:30Z",
      boundaries: ["2026-02-15T13:45:30Z", "2026-03-15T13:45:30Z", "2026-04-15T13:45:30Z"],
    },
    {
      name: "monthly, anchored on the 29th in a non-leap year",
      anchor: "2027-01-29T08:00:00Z",
      boundaries: ["2027-02-28T08:00:00Z", "2027-03-29T08:00:00Z", "2027-04-29T08:00:00Z"],
    },
    {
      name: "monthly, anchored on the 29th in a leap year",
      anchor: "2028-01-29T08:00:00Z",
      boundaries: ["2028-02-29T08:00:00Z", "2028-03-29T08:00:00Z", "2028-04-29T08:00:00Z"],
    },
    {
      name: "monthly, anchored on the 30th one second before midnight",
      anchor: "2026-01-30T23:59:59Z",
      boundaries: [
        "2026-02-28T23:59:59Z",
        "2026-03-30T23:59:59Z",
        "2026-04-30T23:59:59Z",
        "2026-05-30T23:59:59Z",
      ],
    },
    {
      name: "monthly, anchored on the 31st in a non-leap year: clamped, never drifting",
      anchor: "2026-01-31T06:30:00Z",
      boundaries: [
        "2026-02-28T06:30:00Z",
        "2026-03-31T06:30:00Z",
        "2026-04-30T06:30:00Z",
        "2026-05-31T06:30:00Z",
        "2026-06-30T06:30:00Z",
        "2026-07-31T06:30:00Z",
        "2026-08-31T06:30:00Z",
        "2026-09-30T06:30:00Z",
      ],
    },
    {
      name: "monthly, anchored on the 31st in a leap year",
      anchor: "2028-01-31T00:00:00Z",
      boundaries: ["2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z", "2028-04-30T00:00:00Z"],
    },
    {
      name: "monthly, anchored on Dec 31 across the year end",
      anchor: "2026-12-31T18:00:00Z",
      boundaries: ["2027-01-31T18:00:00Z", "2027-02-28T18:00:00Z", "2027-03-31T18:00:00Z"],
    },
    {
      name: "monthly, anchored on Feb 28: stays on the 28th",
      anchor: "2026-02-28T12:00:00Z",
      boundaries: ["2026-03-28T12:00:00Z", "2026-04-28T12:00:00Z"],
    },
    {
      name: "every 3 months, anchored on the 31st",
      anchor: "2026-01-31T00:00:00Z",
      count: 3,
      boundaries: ["2026-04-30T00:00:00Z", "2026-07-31T00:00:00Z", "2026-10-31T00:00:00Z"],
    },
    {
      name: "yearly, anchored on Feb 29",
      anchor: "2028-02-29T12:00:00Z",
      interval: "year",
      boundaries: [
        "2029-02-28T12:00:00Z",
        "2030-02-28T12:00:00Z",
        "2031-02-28T12:00:00Z",
        "2032-02-29T12:00:00Z",
      ],
    },
    {
      name: "every 2 days",
      anchor: "2026-02-27T10:00:00Z",
      interval: "day",
      count: 2,
      boundaries: ["2026-03-01T10:00:00Z", "2026-03-03T10:00:00Z", "2026-03-05T10:00:00Z"],
    },
  ];

  it.each(rows)("$name", async ({ anchor, interval, count, boundaries }) => {
    const { emu, stripe, meter } = await billingSetup();
    clock = ms(anchor);
    const price = emu.addPrice({ meter: meter.id, interval, intervalCount: count });
    const created = emu.addSubscription({ customer: "cus_1", price: price.id, anchor: ms(anchor) });
    const seen: string[][] = [];
    for (const end of boundaries) {
      clock = ms(end) - 1000; // one second before the boundary: still the same period
      const before = (await stripe.subscriptions.retrieve(created.id)).items.data[0];
      clock = ms(end);
      const after = (await stripe.subscriptions.retrieve(created.id)).items.data[0];
      if (!before || !after) throw new Error("no item");
      seen.push([iso(before.current_period_start), iso(before.current_period_end)]);
      expect(iso(after.current_period_start)).toBe(iso(sec(end)));
    }
    const starts = [anchor, ...boundaries.slice(0, -1)];
    expect(seen).toEqual(starts.map((s, i) => [iso(sec(s)), iso(sec(boundaries[i] ?? ""))]));

    const sub = await stripe.subscriptions.retrieve(created.id);
    expect(sub).not.toHaveProperty("current_period_start");
    expect(sub).not.toHaveProperty("current_period_end");
    expect(sub).toMatchObject({
      object: "subscription",
      billing_cycle_anchor: sec(anchor),
      billing_mode: { type: "flexible" },
      start_date: sec(anchor),
      status: "active",
      customer: "cus_1",
    });
    // One cycle invoice per boundary crossed, each for the period that ended there.
    const ends = emu.invoices().map((i) => iso(i.period_end));
    expect(ends).toEqual(boundaries.map((b) => iso(sec(b))));
  });

  it("a start before the anchor gives a short first period; a start after it, a period ending on the anchor's grid", async () => {
    const { emu, stripe } = await billingSetup();
    const price = emu.addPrice();
    clock = ms("2026-01-10T09:00:00Z");
    const early = emu.addSubscription({
      customer: "cus_1",
      price: price.id,
      anchor: ms("2026-02-01T00:00:00Z"),
    });
    expect(early.start_date).toBe(sec("2026-01-10T09:00:00Z"));
    expect(early.items.data[0]).toMatchObject({
      current_period_start: sec("2026-01-10T09:00:00Z"),
      current_period_end: sec("2026-02-01T00:00:00Z"),
    });
    clock = ms("2026-03-10T00:00:00Z");
    const late = emu.addSubscription({
      customer: "cus_2",
      price: price.id,
      anchor: ms("2026-01-31T00:00:00Z"),
      startDate: clock,
    });
    const item = (await stripe.subscriptionItems.list({ subscription: late.id })).data[0];
    expect(item).toMatchObject({
      current_period_start: sec("2026-03-10T00:00:00Z"),
      current_period_end: sec("2026-03-31T00:00:00Z"),
    });
  });

  it("missed periods catch up in order, each invoice created at its boundary and finalized after its grace", async () => {
    const { emu, stripe } = await billingSetup();
    const price = emu.addPrice();
    clock = ms("2026-01-31T00:00:00Z");
    const sub = emu.addSubscription({ customer: "cus_1", price: price.id, anchor: clock });
    clock = ms("2026-05-15T00:00:00Z");
    const list = await stripe.invoices.list({ subscription: sub.id });
    expect(list.data.map((i) => [iso(i.period_start), iso(i.period_end)])).toEqual([
      ["2026-03-31T00:00:00.000Z", "2026-04-30T00:00:00.000Z"],
      ["2026-02-28T00:00:00.000Z", "2026-03-31T00:00:00.000Z"],
      ["2026-01-31T00:00:00.000Z", "2026-02-28T00:00:00.000Z"],
    ]);
    for (const i of list.data) {
      expect(i.created).toBe(i.period_end);
      expect(i.status).toBe("open");
      expect(i.status_transitions.finalized_at).toBe(i.created + HOUR);
      expect(i.automatically_finalizes_at).toBeNull();
    }
    const item = (await stripe.subscriptions.retrieve(sub.id)).items.data[0];
    expect(item?.current_period_start).toBe(sec("2026-04-30T00:00:00Z"));
    expect(item?.current_period_end).toBe(sec("2026-05-31T00:00:00Z"));
  });
});

describe("stripe emulator billing: prices", () => {
  it("lists metered prices by meter, usage type and active, paginated newest first", async () => {
    const { emu, stripe, meter } = await billingSetup();
    const other = await stripe.billing.meters.create({
      display_name: "SMS",
      event_name: OTHER_EVENT,
      default_aggregation: { formula: "count" },
    });
    const onMeter = Array.from({ length: 12 }, (_, i) =>
      emu.addPrice({
        meter: meter.id,
        interval: i % 3 === 0 ? "day" : "month",
        product: "prod_data",
      }),
    );
    const onOther = emu.addPrice({ eventName: OTHER_EVENT, interval: "year" });
    const licensed = emu.addPrice({ usageType: "licensed", id: "price_base_fee" });
    const archived = emu.addPrice({ meter: meter.id, active: false });

    const first = await stripe.prices.list({ recurring: { meter: meter.id } });
    expect(first).toMatchObject({ object: "list", has_more: true, url: "/v1/prices" });
    expect(first.data.map((p) => p.id)).toEqual(
      onMeter
        .map((p) => p.id)
        .reverse()
        .slice(0, 10),
    );
    const second = await stripe.prices.list({
      recurring: { meter: meter.id },
      starting_after: first.data[9]?.id,
    });
    expect(second.has_more).toBe(false);
    expect(second.data.map((p) => p.id)).toEqual([onMeter[1]?.id, onMeter[0]?.id]);

    const all = await stripe.prices
      .list({ recurring: { meter: meter.id, usage_type: "metered" }, limit: 5 })
      .autoPagingToArray({ limit: 100 });
    expect(all).toHaveLength(12);
    expect(all.every((p) => p.recurring?.meter === meter.id && p.active)).toBe(true);

    const inactive = await stripe.prices.list({ active: false });
    expect(inactive.data.map((p) => p.id)).toEqual([archived.id]);
    const daily = await stripe.prices.list({ recurring: { meter: meter.id, interval: "day" } });
    expect(daily.data).toHaveLength(4);
    const lic = await stripe.prices.list({ recurring: { usage_type: "licensed" } });
    expect(lic.data.map((p) => p.id)).toEqual([licensed.id]);
    expect(lic.data[0]?.recurring?.meter).toBeNull();
    const byProduct = await stripe.prices.list({ product: "prod_data", limit: 100 });
    expect(byProduct.data).toHaveLength(12);

    const got = await stripe.prices.retrieve(onOther.id);
    expect(got).toMatchObject({
      id: onOther.id,
      object: "price",
      active: true,
      type: "recurring",
      recurring: { interval: "year", interval_count: 1, usage_type: "metered", meter: other.id },
    });
    expect(got.product).toMatch(/^prod_/);

    const missing = await failure(stripe.prices.retrieve("price_nope"));
    expect(missing).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(missing).toMatchObject({ statusCode: 404, code: "resource_missing" });
    expect(missing.message).toBe("No such price: 'price_nope'");
    for (const limit of [0, 101]) {
      const bad = await failure(stripe.prices.list({ limit }));
      expect(bad).toMatchObject({ statusCode: 400, param: "limit" });
    }
    const badUsage = await failure(stripe.prices.list({ recurring: { usage_type: "sometimes" } }));
    expect(badUsage).toMatchObject({ statusCode: 400, param: "recurring[usage_type]" });
    const unknown = await failure(
      stripe.prices.list({ recurring: { colour: "red" } } as Stripe.PriceListParams),
    );
    expect(unknown).toMatchObject({ statusCode: 400, param: "recurring[colour]" });
    const badCursor = await failure(stripe.prices.list({ starting_after: "price_gone" }));
    expect(badCursor).toMatchObject({ statusCode: 400, param: "starting_after" });
  });

  it("an archived price keeps billing its existing items and no longer takes new ones", async () => {
    const { emu, stripe } = await billingSetup();
    const price = emu.addPrice();
    const sub = emu.addSubscription({ customer: "cus_1", price: price.id, anchor: clock });
    emu.setPriceActive(price.id, false);
    expect(() =>
      emu.addSubscription({ customer: "cus_2", price: price.id, anchor: clock }),
    ).toThrow(/inactive/);
    const listed = await stripe.subscriptions.list({ price: price.id });
    expect(listed.data.map((s) => s.id)).toEqual([sub.id]);
    expect(listed.data[0]?.items.data[0]?.price.active).toBe(false);
  });
});

describe("stripe emulator billing: subscriptions", () => {
  it("lists by price, customer and status (default: not canceled), paginated; items embed the price", async () => {
    const { emu, stripe, meter } = await billingSetup();
    const p1 = emu.addPrice({ meter: meter.id });
    const p2 = emu.addPrice({ meter: meter.id });
    const fee = emu.addPrice({ usageType: "licensed" });
    const anchor = ms("2026-03-01T00:00:00Z");
    const s1 = emu.addSubscription({ customer: "cus_1", price: p1.id, anchor });
    const s2 = emu.addSubscription({ customer: "cus_2", prices: [p1.id, fee.id], anchor });
    const s3 = emu.addSubscription({ customer: "cus_1", price: p2.id, anchor, status: "canceled" });
    const s4 = emu.addSubscription({ customer: "cus_2", price: p1.id, anchor, status: "trialing" });
    emu.setSubscriptionStatus(s4.id, "paused");
    const many = Array.from({ length: 10 }, () =>
      emu.addSubscription({ customer: "cus_3", price: p2.id, anchor, status: "past_due" }),
    );

    const byPrice = await stripe.subscriptions.list({ price: p1.id });
    expect(byPrice).toMatchObject({ object: "list", has_more: false, url: "/v1/subscriptions" });
    expect(byPrice.data.map((s) => s.id)).toEqual([s4.id, s2.id, s1.id]);
    const p2All = await stripe.subscriptions.list({ price: p2.id, status: "all", limit: 100 });
    expect(p2All.data.map((s) => s.id)).toContain(s3.id);
    expect((await stripe.subscriptions.list({ price: p2.id, limit: 100 })).data).toHaveLength(10);
    const cus1 = await stripe.subscriptions.list({ customer: "cus_1" });
    expect(cus1.data.map((s) => s.id)).toEqual([s1.id]);
    const canceled = await stripe.subscriptions.list({ status: "canceled" });
    expect(canceled.data.map((s) => s.id)).toEqual([s3.id]);
    expect(canceled.data[0]?.canceled_at).toBe(sec("2026-02-10T12:00:00Z"));
    expect((await stripe.subscriptions.list({ status: "ended" })).data.map((s) => s.id)).toEqual([
      s3.id,
    ]);
    expect((await stripe.subscriptions.list({ status: "paused" })).data.map((s) => s.id)).toEqual([
      s4.id,
    ]);

    const page = await stripe.subscriptions.list({ customer: "cus_3", limit: 4 });
    expect(page.data).toHaveLength(4);
    expect(page.has_more).toBe(true);
    const every = await stripe.subscriptions
      .list({ customer: "cus_3", limit: 4 })
      .autoPagingToArray({ limit: 100 });
    expect(every.map((s) => s.id)).toEqual(many.map((s) => s.id).reverse());

    const got = await stripe.subscriptions.retrieve(s2.id);
    expect(got.items).toMatchObject({ object: "list", has_more: false });
    expect(got.items.data.map((i) => i.price.id)).toEqual([p1.id, fee.id]);
    const [metered, licensed] = got.items.data;
    expect(metered).toMatchObject({
      object: "subscription_item",
      subscription: s2.id,
      current_period_start: sec("2026-02-10T12:00:00Z"),
      current_period_end: sec("2026-03-01T00:00:00Z"),
      price: {
        id: p1.id,
        object: "price",
        recurring: { usage_type: "metered", meter: meter.id, interval: "month" },
      },
    });
    expect(licensed?.price.recurring?.usage_type).toBe("licensed");
    expect(licensed?.quantity).toBe(1);

    const listedItems = await stripe.subscriptionItems.list({ subscription: s2.id });
    expect(listedItems).toMatchObject({ object: "list", url: "/v1/subscription_items" });
    expect(listedItems.data.map((i) => i.id)).toEqual(got.items.data.map((i) => i.id));
    const oneItem = await stripe.subscriptionItems.retrieve(metered?.id ?? "");
    expect(oneItem.current_period_end).toBe(sec("2026-03-01T00:00:00Z"));

    // Period filters: the minimum item current_period_end.
    const ending = await stripe.subscriptions.list({
      current_period_end: { lte: sec("2026-03-01T00:00:00Z") },
      customer: "cus_1",
    });
    expect(ending.data.map((s) => s.id)).toEqual([s1.id]);
    const none = await stripe.subscriptions.list({
      current_period_end: { gt: sec("2026-03-01T00:00:00Z") },
    });
    expect(none.data).toHaveLength(0);
  });

  it("pages items past the 20 embedded in the subscription", async () => {
    const { emu, stripe } = await billingSetup();
    const prices = Array.from({ length: 25 }, () => emu.addPrice());
    const sub = emu.addSubscription({
      customer: "cus_1",
      prices: prices.map((p) => p.id),
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    const got = await stripe.subscriptions.retrieve(sub.id);
    expect(got.items.data).toHaveLength(20);
    expect(got.items.has_more).toBe(true);
    const items = await stripe.subscriptionItems
      .list({ subscription: sub.id, limit: 100 })
      .autoPagingToArray({ limit: 1000 });
    expect(items.map((i) => i.price.id)).toEqual(prices.map((p) => p.id));
  });

  it("rejects unknown ids and bad parameters like Stripe", async () => {
    const { emu, stripe } = await billingSetup();
    emu.addSubscription({ customer: "cus_1", price: emu.addPrice().id, anchor: clock });
    const missing = await failure(stripe.subscriptions.retrieve("sub_nope"));
    expect(missing).toMatchObject({ statusCode: 404, code: "resource_missing" });
    expect(missing.message).toBe("No such subscription: 'sub_nope'");
    const noItem = await failure(stripe.subscriptionItems.retrieve("si_nope"));
    expect(noItem).toMatchObject({ statusCode: 404, code: "resource_missing" });
    const noSub = await failure(
      stripe.subscriptionItems.list({} as Stripe.SubscriptionItemListParams),
    );
    expect(noSub).toMatchObject({
      statusCode: 400,
      code: "parameter_missing",
      param: "subscription",
    });
    const ghostSub = await failure(stripe.subscriptionItems.list({ subscription: "sub_ghost" }));
    expect(ghostSub).toMatchObject({ code: "resource_missing", param: "subscription" });
    const badStatus = await failure(stripe.subscriptions.list({ status: "sleeping" }));
    expect(badStatus).toMatchObject({ statusCode: 400, param: "status" });
    expect(badStatus.rawType).toBe("invalid_request_error");
    const ghostPrice = await failure(stripe.subscriptions.list({ price: "price_ghost" }));
    expect(ghostPrice).toMatchObject({ code: "resource_missing", param: "price" });
    const ghostCustomer = await failure(stripe.subscriptions.list({ customer: "cus_ghost" }));
    expect(ghostCustomer).toMatchObject({ code: "resource_missing", param: "customer" });
    const unknown = await failure(
      stripe.subscriptions.list({ meter: "mtr_x" } as Stripe.SubscriptionListParams),
    );
    expect(unknown.message).toBe("Received unknown parameter: meter");
    expect(() =>
      emu.addSubscription({ customer: "cus_ghost", price: "price_x", anchor: clock }),
    ).toThrow(/addCustomer/);
  });

  it("a paused subscription neither advances nor invoices; resuming restarts the period now; canceled ones stop", async () => {
    const { emu, stripe } = await billingSetup();
    const price = emu.addPrice();
    const anchor = ms("2026-03-01T00:00:00Z");
    const paused = emu.addSubscription({ customer: "cus_1", price: price.id, anchor });
    const canceled = emu.addSubscription({ customer: "cus_2", price: price.id, anchor });
    emu.setSubscriptionStatus(paused.id, "paused");
    emu.setSubscriptionStatus(canceled.id, "canceled");
    clock = ms("2026-03-05T00:00:00Z");
    expect(await stripe.invoices.list()).toMatchObject({ data: [] });
    const held = (await stripe.subscriptions.retrieve(paused.id)).items.data[0];
    expect(held?.current_period_end).toBe(sec("2026-03-01T00:00:00Z"));
    expect((await stripe.subscriptions.list()).data.map((s) => s.id)).toEqual([paused.id]);

    const resumed = emu.setSubscriptionStatus(paused.id, "active");
    expect(resumed.items.data[0]).toMatchObject({
      current_period_start: sec("2026-03-05T00:00:00Z"),
      current_period_end: sec("2026-04-01T00:00:00Z"),
    });
    clock = ms("2026-04-01T00:00:00Z");
    expect(emu.invoices().map((i) => i.parent.subscription_details.subscription)).toEqual([
      paused.id,
    ]);
    const none = await failure(
      stripe.invoices.createPreview({ customer: "cus_2", subscription: canceled.id }),
    );
    expect(none).toMatchObject({ statusCode: 400, code: "invoice_upcoming_none" });
    expect(() => emu.setSubscriptionStatus(canceled.id, "active")).toThrow(/terminal/);
  });
});

describe("stripe emulator billing: cycle invoices", () => {
  it("a draft appears at rollover, takes late usage for its period while a draft, and freezes at finalization", async () => {
    const { emu, stripe, meter } = await billingSetup();
    const price = emu.addPrice({ meter: meter.id });
    const sub = emu.addSubscription({
      customer: "cus_1",
      price: price.id,
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    const itemId = sub.items.data[0]?.id;
    clock = ms("2026-02-12T00:00:00Z");
    await send(stripe, "cus_1", 100);
    clock = ms("2026-02-28T23:59:59Z");
    await send(stripe, "cus_1", 5);
    expect((await stripe.invoices.list({ customer: "cus_1" })).data).toHaveLength(0);
    const before = await stripe.invoices.createPreview({
      customer: "cus_1",
      subscription: sub.id,
    });
    expect(quantities(before)).toEqual([[105, "105"]]);

    // The boundary passes: the item moves on and a draft bills the period that ended.
    clock = ms("2026-03-01T00:10:00Z");
    const [draft, ...others] = (await stripe.invoices.list({ customer: "cus_1" })).data;
    expect(others).toHaveLength(0);
    if (!draft?.id) throw new Error("no draft");
    const created = sec("2026-03-01T00:00:00Z");
    expect(draft).toMatchObject({
      object: "invoice",
      status: "draft",
      billing_reason: "subscription_cycle",
      customer: "cus_1",
      created,
      period_start: sec("2026-02-10T12:00:00Z"),
      period_end: created,
      automatically_finalizes_at: created + HOUR,
      status_transitions: { finalized_at: null },
      parent: { type: "subscription_details", subscription_details: { subscription: sub.id } },
      number: null,
    });
    expect(firstLine(draft)).toMatchObject({
      object: "line_item",
      invoice: draft.id,
      period: { start: sec("2026-02-10T12:00:00Z"), end: created },
      quantity: 105,
      pricing: {
        type: "price_details",
        price_details: { price: price.id, product: price.product },
      },
      parent: {
        type: "subscription_item_details",
        subscription_item_details: {
          subscription_item: itemId,
          subscription: sub.id,
          proration: false,
        },
      },
    });
    expect(String(firstLine(draft).quantity_decimal)).toBe("105");
    const rolled = await stripe.subscriptions.retrieve(sub.id);
    expect(rolled.latest_invoice).toBe(draft.id);
    expect(rolled.items.data[0]).toMatchObject({
      current_period_start: created,
      current_period_end: sec("2026-04-01T00:00:00Z"),
    });

    // Sent after the boundary, timestamped in the ended period: lands on the draft.
    await send(stripe, "cus_1", 20, sec("2026-02-27T10:00:00Z"), "late-1");
    // Timestamped in the new period: not on the draft, on the preview.
    await send(stripe, "cus_1", 7, sec("2026-03-01T00:05:00Z"));
    expect(quantities(await stripe.invoices.retrieve(draft.id))).toEqual([[125, "125"]]);
    const preview = await stripe.invoices.createPreview({
      customer: "cus_1",
      subscription: sub.id,
    });
    expect(preview.id).toMatch(/^upcoming_in_/);
    expect(preview).toMatchObject({
      billing_reason: "upcoming",
      status: "draft",
      period_start: created,
      period_end: sec("2026-04-01T00:00:00Z"),
    });
    expect(firstLine(preview).period).toEqual({ start: created, end: sec("2026-04-01T00:00:00Z") });
    expect(quantities(preview)).toEqual([[7, "7"]]);

    // A cancel adjustment while it is a draft takes the usage back off.
    await stripe.billing.meterEventAdjustments.create({
      event_name: EVENT,
      type: "cancel",
      cancel: { identifier: "late-1" },
    });
    clock = ms("2026-03-01T00:59:59Z");
    await send(stripe, "cus_1", 3, sec("2026-02-20T00:00:00Z"), "late-2");
    expect(quantities(await stripe.invoices.retrieve(draft.id))).toEqual([[108, "108"]]);

    // The clock reaches automatically_finalizes_at: recomputed, frozen, open.
    clock = (created + HOUR) * 1000;
    const open = await stripe.invoices.retrieve(draft.id);
    expect(open).toMatchObject({
      status: "open",
      automatically_finalizes_at: null,
      status_transitions: { finalized_at: created + HOUR },
    });
    expect(open.number).toMatch(/^EMU-/);
    expect(quantities(open)).toEqual([[108, "108"]]);
    // Cancelling usage already on a finalized invoice does not change it (summaries drop it).
    await stripe.billing.meterEventAdjustments.create({
      event_name: EVENT,
      type: "cancel",
      cancel: { identifier: "late-2" },
    });
    expect(quantities(await stripe.invoices.retrieve(draft.id))).toEqual([[108, "108"]]);

    // Later usage for the finalized period is accepted and summarised, never invoiced.
    clock = ms("2026-03-03T00:00:00Z");
    await send(stripe, "cus_1", 1000, sec("2026-02-25T00:00:00Z"));
    expect(quantities(await stripe.invoices.retrieve(draft.id))).toEqual([[108, "108"]]);
    const summary = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: "cus_1",
      start_time: sec("2026-02-10T12:00:00Z"),
      end_time: created,
    });
    expect(summary.data.map((s) => s.aggregated_value)).toEqual([1105]);
    expect((await stripe.invoices.list({ status: "draft" })).data).toHaveLength(0);
    expect((await stripe.invoices.list({ status: "open" })).data.map((i) => i.id)).toEqual([
      draft.id,
    ]);
    expect(quantities(await stripe.invoices.createPreview({ subscription: sub.id }))).toEqual([
      [7, "7"],
    ]);
    // The helper sees the same.
    expect(
      emu.invoices({ customer: "cus_1" }).map((i) => [i.id, i.lines.data[0]?.quantity]),
    ).toEqual([[draft.id, 108]]);
  });

  it("lines page through /v1/invoices/:id/lines and expand their price", async () => {
    const { emu, stripe, meter } = await billingSetup();
    const other = await stripe.billing.meters.create({
      display_name: "SMS",
      event_name: OTHER_EVENT,
      default_aggregation: { formula: "count" },
    });
    const data = emu.addPrice({ meter: meter.id });
    const sms = emu.addPrice({ meter: other.id });
    const fee = emu.addPrice({ usageType: "licensed" });
    const yearly = emu.addPrice({ meter: meter.id, interval: "year" });
    const sub = emu.addSubscription({
      customer: "cus_1",
      prices: [data.id, sms.id, fee.id, yearly.id],
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    await send(stripe, "cus_1", 40);
    for (let i = 0; i < 3; i++) {
      await stripe.billing.meterEvents.create({
        event_name: OTHER_EVENT,
        payload: { stripe_customer_id: "cus_1" },
      });
    }
    clock = ms("2026-03-01T00:00:00Z");
    const [invoice] = emu.invoices();
    if (!invoice) throw new Error("no invoice");
    // All four first periods end on the anchor: one invoice for the items that ended together.
    const lines = await stripe.invoices.listLineItems(invoice.id, {
      limit: 2,
      expand: ["data.pricing.price_details.price"],
    });
    expect(lines).toMatchObject({
      object: "list",
      has_more: true,
      url: `/v1/invoices/${invoice.id}/lines`,
    });
    const all = await stripe.invoices
      .listLineItems(invoice.id, { limit: 2, expand: ["data.pricing.price_details.price"] })
      .autoPagingToArray({ limit: 10 });
    const described = all.map((l) => {
      const p = l.pricing?.price_details?.price;
      if (typeof p !== "object") throw new Error("price not expanded");
      return [p.id, p.recurring?.usage_type, l.quantity, l.period.start, l.period.end];
    });
    expect(described).toEqual([
      [data.id, "metered", 40, sec("2026-02-10T12:00:00Z"), sec("2026-03-01T00:00:00Z")],
      [sms.id, "metered", 3, sec("2026-02-10T12:00:00Z"), sec("2026-03-01T00:00:00Z")],
      // Licensed: billed in advance, for the period that just began.
      [fee.id, "licensed", 1, sec("2026-03-01T00:00:00Z"), sec("2026-04-01T00:00:00Z")],
      [yearly.id, "metered", 40, sec("2026-02-10T12:00:00Z"), sec("2026-03-01T00:00:00Z")],
    ]);
    const items = (await stripe.subscriptions.retrieve(sub.id)).items.data;
    expect(items.map((i) => iso(i.current_period_end))).toEqual([
      "2026-04-01T00:00:00.000Z",
      "2026-04-01T00:00:00.000Z",
      "2026-04-01T00:00:00.000Z",
      "2027-03-01T00:00:00.000Z",
    ]);
    // Per-item periods: at the next boundary only the monthly items are due.
    clock = ms("2026-04-01T00:00:00Z");
    const [april] = (await stripe.invoices.list({ subscription: sub.id, limit: 1 })).data;
    expect(april?.lines.data.map((l) => l.pricing?.price_details?.price)).toEqual([
      data.id,
      sms.id,
      fee.id,
    ]);
    expect(april?.period_start).toBe(sec("2026-03-01T00:00:00Z"));
    const plain = await stripe.invoices.listLineItems(invoice.id);
    expect(plain.data[0]?.pricing?.price_details?.price).toBe(data.id);

    const tooDeep = await failure(
      stripe.subscriptions.list({ expand: ["data.items.data.price.product"] }),
    );
    expect(tooDeep).toMatchObject({ statusCode: 400, param: "expand" });
    const notExpandable = await failure(
      stripe.invoices.listLineItems(invoice.id, { expand: ["data.period"] }),
    );
    expect(notExpandable).toMatchObject({ statusCode: 400, param: "expand" });
    const withSub = await stripe.invoices.retrieve(invoice.id, {
      expand: ["parent.subscription_details.subscription", "customer"],
    });
    const parentSub = withSub.parent?.subscription_details?.subscription;
    expect(typeof parentSub === "object" && parentSub.id).toBe(sub.id);
    expect(typeof withSub.customer === "object" && withSub.customer?.id).toBe("cus_1");
  });

  it("the finalization grace is configurable per emulator and at runtime", async () => {
    const { emu, stripe } = await billingSetup({ invoiceGraceSeconds: 7200 });
    const price = emu.addPrice({ interval: "day" });
    emu.addSubscription({ customer: "cus_1", price: price.id, anchor: clock });
    clock += 86_400_000;
    emu.setInvoiceGraceSeconds(600);
    clock += 86_400_000;
    expect(emu.invoiceGraceSeconds()).toBe(600);
    const list = (await stripe.invoices.list()).data.reverse();
    expect(list.map((i) => i.status)).toEqual(["open", "draft"]);
    const finalizes = list.map(
      (i) => (i.status_transitions.finalized_at ?? i.automatically_finalizes_at ?? 0) - i.created,
    );
    expect(finalizes).toEqual([7200, 600]);
    expect(() => emu.setInvoiceGraceSeconds(72 * HOUR + 1)).toThrow(/grace/);
    expect(() => emu.setInvoiceGraceSeconds(-1)).toThrow(/grace/);
  });

  it("a negative aggregate bills 0", async () => {
    const { emu, stripe } = await billingSetup();
    const sub = emu.addSubscription({
      customer: "cus_1",
      price: emu.addPrice().id,
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    await send(stripe, "cus_1", 10);
    await send(stripe, "cus_1", -30);
    expect(quantities(await stripe.invoices.createPreview({ subscription: sub.id }))).toEqual([
      [0, "0"],
    ]);
    clock = ms("2026-03-01T02:00:00Z");
    const [invoice] = (await stripe.invoices.list({ subscription: sub.id })).data;
    expect(invoice?.status).toBe("open");
    expect(invoice && quantities(invoice)).toEqual([[0, "0"]]);
  });

  it("usage of a customer without a subscription is summarised but on no invoice", async () => {
    const { emu, stripe, meter } = await billingSetup();
    emu.addSubscription({
      customer: "cus_1",
      price: emu.addPrice().id,
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    await send(stripe, "cus_1", 1);
    await send(stripe, "cus_2", 500);
    clock = ms("2026-03-01T02:00:00Z");
    expect((await stripe.invoices.list({ customer: "cus_2" })).data).toHaveLength(0);
    const billed = emu.invoices().flatMap((i) => i.lines.data.map((l) => [i.customer, l.quantity]));
    expect(billed).toEqual([["cus_1", 1]]);
    const summary = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: "cus_2",
      start_time: sec("2026-02-10T00:00:00Z"),
      end_time: sec("2026-03-01T00:00:00Z"),
    });
    expect(summary.data.map((s) => s.aggregated_value)).toEqual([500]);
  });

  it("a subscription created later does not bill usage from before it began", async () => {
    const { emu, stripe, meter } = await billingSetup();
    clock = ms("2026-02-05T00:00:00Z");
    await send(stripe, "cus_1", 50);
    clock = ms("2026-02-10T12:00:00Z");
    const sub = emu.addSubscription({
      customer: "cus_1",
      price: emu.addPrice().id,
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    expect(sub.start_date).toBe(sec("2026-02-10T12:00:00Z"));
    clock = ms("2026-02-12T00:00:00Z");
    await send(stripe, "cus_1", 10);
    expect(quantities(await stripe.invoices.createPreview({ subscription: sub.id }))).toEqual([
      [10, "10"],
    ]);
    clock = ms("2026-03-01T02:00:00Z");
    const [invoice] = (await stripe.invoices.list({ customer: "cus_1" })).data;
    expect(invoice && quantities(invoice)).toEqual([[10, "10"]]);
    const summary = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: "cus_1",
      start_time: sec("2026-02-01T00:00:00Z"),
      end_time: sec("2026-03-01T00:00:00Z"),
    });
    expect(summary.data.map((s) => s.aggregated_value)).toEqual([60]);
  });

  it("rollover follows the emulator clock including clockOffsetMs", async () => {
    const { emu, stripe } = await billingSetup({ clockOffsetMs: 2 * HOUR * 1000 });
    const sub = emu.addSubscription({
      customer: "cus_1",
      price: emu.addPrice().id,
      anchor: ms("2026-03-01T00:00:00Z"),
    });
    clock = ms("2026-02-28T23:00:00Z"); // the emulator reads 01:00 on Mar 1
    const res = await stripe.invoices.list({ subscription: sub.id });
    expect(res.data).toHaveLength(1);
    expect(res.lastResponse.headers.date).toBe(new Date(ms("2026-03-01T01:00:00Z")).toUTCString());
    emu.setClockOffsetMs(0);
    // The clock going back does not undo a rollover.
    const item = (await stripe.subscriptions.retrieve(sub.id)).items.data[0];
    expect(item?.current_period_start).toBe(sec("2026-03-01T00:00:00Z"));
  });

  it("previews need a subscription; unknown invoices 404; GET /v1/invoices/upcoming is gone", async () => {
    const { emu, stripe } = await billingSetup();
    const sub = emu.addSubscription({ customer: "cus_1", price: emu.addPrice().id, anchor: clock });
    const noSub = await failure(stripe.invoices.createPreview({ customer: "cus_1" }));
    expect(noSub).toMatchObject({ statusCode: 400, param: "subscription" });
    const wrongCustomer = await failure(
      stripe.invoices.createPreview({ customer: "cus_2", subscription: sub.id }),
    );
    expect(wrongCustomer).toMatchObject({ statusCode: 400, param: "subscription" });
    const ghost = await failure(stripe.invoices.createPreview({ subscription: "sub_ghost" }));
    expect(ghost).toMatchObject({
      statusCode: 400,
      code: "resource_missing",
      param: "subscription",
    });

    const missing = await failure(stripe.invoices.retrieve("in_nope"));
    expect(missing).toMatchObject({ statusCode: 404, code: "resource_missing" });
    expect(missing.message).toBe("No such invoice: 'in_nope'");
    const noLines = await failure(stripe.invoices.listLineItems("in_nope"));
    expect(noLines).toMatchObject({ statusCode: 404, code: "resource_missing" });
    const preview = await stripe.invoices.createPreview({ subscription: sub.id });
    // Previews are not stored: not listed, not retrievable.
    expect((await stripe.invoices.list()).data).toHaveLength(0);
    expect((await failure(stripe.invoices.retrieve(preview.id ?? ""))).statusCode).toBe(404);
    const badStatus = await failure(stripe.invoices.list({ status: "pending" }));
    expect(badStatus).toMatchObject({ statusCode: 400, param: "status" });
    const ghostCustomer = await failure(stripe.invoices.list({ customer: "cus_ghost" }));
    expect(ghostCustomer).toMatchObject({ code: "resource_missing", param: "customer" });

    const upcoming = await failure(
      stripe.rawRequest("GET", "/v1/invoices/upcoming?customer=cus_1"),
    );
    expect(upcoming).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(upcoming.statusCode).toBe(404);
    expect(upcoming.message).toContain("create_preview");
    const res = await fetch(`${emu.url}/v1/invoices/upcoming?customer=cus_1`, {
      headers: { Authorization: `Bearer ${emu.apiKey}` },
    });
    expect(res.status).toBe(404);
    expect(
      (stripe.invoices as unknown as Record<string, unknown>).retrieveUpcoming,
    ).toBeUndefined();
  });
});
