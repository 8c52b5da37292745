// The admin API's routes, in one table: the router (src/api/router.ts) serves them and the OpenAPI
// document (src/api/openapi.ts) describes them from the same zod schemas, so the two cannot drift.
// Each handler is one call to a view (src/views/): the same function the CLI's --json prints.
import { z } from "zod";
import type { CustomerBilling } from "../billing/periods.ts";
import { listQuarantineRows } from "../ingest/requeue.ts";
import type { Ledger } from "../ledger/port.ts";
import type { PlanSettings } from "../reporting/outbox.ts";
import {
  CustomerDetail,
  CustomerParams,
  CustomerSummaryList,
  CustomerSummaryParams,
  customerDetail,
  customerSummaryList,
  UnknownCustomer,
} from "../views/customer-usage.ts";
import { AssignmentList, AssignmentParams, assignmentList } from "../views/customers.ts";
import { OutboxRowList, OutboxRowParams, outboxRowList } from "../views/outbox.ts";
import { Overview, overviewView } from "../views/overview.ts";
import type { StripeAccess } from "../views/parity.ts";
import {
  AnomalyList,
  AnomalyParams,
  anomalyList,
  QuarantineItem,
  QuarantineList,
  QuarantineParams,
  quarantineItem,
  quarantineList,
} from "../views/quarantine.ts";
import { ReportStatus, reportStatusView } from "../views/report.ts";
import {
  IngestLag,
  IngestLagParams,
  ingestLag,
  UsageSeries,
  UsageSeriesParams,
  usageSeries,
} from "../views/series.ts";
import { SimDetail, SimParams, SimQuery, simDetail, UnknownSim } from "../views/sim.ts";
import {
  UnmappedList,
  UnmappedParams,
  UsageList,
  UsageParams,
  unmappedList,
  usageList,
} from "../views/usage.ts";

export type ApiContext = {
  /** the ledger the views read through (src/ledger/port.ts) */
  ledger: Ledger;
  now: () => number;
  planSettings: PlanSettings;
  /**
   * Stripe, when STRIPE_SECRET_KEY is set: the console's invoice previews, parity and statements
   * (the API's routes answer from the ledger alone).
   */
  stripe?: StripeAccess;
};

/** the stored subscription periods (the reporter refreshes them) */
const storedBilling = (ctx: ApiContext): Promise<ReadonlyMap<string, CustomerBilling>> =>
  ctx.ledger.billing.load();

export class NotFound extends Error {
  override name = "NotFound";
}

type AnyObject = z.ZodObject<z.ZodRawShape>;

export type Route = {
  /** OpenAPI path template; `{name}` segments become express `:name` */
  path: string;
  summary: string;
  description: string;
  tag: string;
  path_params?: AnyObject;
  query: AnyObject;
  response: z.ZodType;
  handler: (ctx: ApiContext, params: Record<string, unknown>) => unknown | Promise<unknown>;
};

function route<Q extends AnyObject, P extends AnyObject = z.ZodObject<Record<never, never>>>(r: {
  path: string;
  summary: string;
  description: string;
  tag: string;
  path_params?: P;
  query: Q;
  response: z.ZodType;
  handler: (ctx: ApiContext, params: z.output<Q> & z.output<P>) => unknown | Promise<unknown>;
}): Route {
  return r as unknown as Route;
}

const QuarantineId = z.object({
  id: z.coerce
    .number()
    .int()
    .min(1)
    .meta({ override: { type: "integer" } }),
});

export const ROUTES: Route[] = [
  route({
    path: "/api/usage",
    summary: "Usage per SIM",
    description:
      "Counted bytes per SIM per hour, day, UTC month or in total, ordered by SIM then period. The same answer as `simmeter usage --json`.",
    tag: "usage",
    query: UsageParams,
    response: UsageList,
    handler: (ctx, p) => usageList(ctx.ledger, p),
  }),
  route({
    path: "/api/usage/unmapped",
    summary: "Usage no customer assignment covers",
    description:
      "SIMs with counted bytes that no assignment covers: kept, and reported as soon as an assignment covers them. The same answer as `simmeter usage --unmapped --json`.",
    tag: "usage",
    query: UnmappedParams,
    response: UnmappedList,
    handler: (ctx, p) => unmappedList(ctx.ledger, p),
  }),
  route({
    path: "/api/quarantine",
    summary: "Quarantined events",
    description:
      "Authenticated events that could not be counted, newest first, with the raw event as received. The same answer as `simmeter quarantine list --json`.",
    tag: "quarantine",
    query: QuarantineParams,
    response: QuarantineList,
    handler: (ctx, p) => quarantineList(ctx.ledger, p),
  }),
  route({
    path: "/api/quarantine/{id}",
    summary: "One quarantined event",
    description: "One quarantine row by id.",
    tag: "quarantine",
    path_params: QuarantineId,
    query: z.object({}),
    response: QuarantineItem,
    handler: async (ctx, p) => {
      const [row] = await listQuarantineRows(ctx.ledger, { ids: [p.id], limit: 1 });
      if (!row) throw new NotFound(`no quarantine row ${p.id}`);
      return quarantineItem(row);
    },
  }),
  route({
    path: "/api/anomalies",
    summary: "Accounting anomalies",
    description:
      "Readings that did not add up (a cumulative total going down, readings after the end, impossible rates…), newest first. The same answer as `simmeter anomalies --json`.",
    tag: "usage",
    query: AnomalyParams,
    response: AnomalyList,
    handler: (ctx, p) => anomalyList(ctx.ledger, p),
  }),
  route({
    path: "/api/customers",
    summary: "Customer assignments",
    description:
      "SIM, ICCID and fleet assignments to Stripe customers with their effective times, in the order they were made. The same answer as `simmeter customers list --json`.",
    tag: "customers",
    query: AssignmentParams,
    response: AssignmentList,
    handler: (ctx, p) => assignmentList(ctx.ledger, p),
  }),
  route({
    path: "/api/report/status",
    summary: "Billing sync status",
    description:
      "The outbox by state, pending and stopped rows, and the counted usage the next report pass would hold because no invoice would carry it (by the stored subscription periods). The same answer as `simmeter report --status --json`.",
    tag: "reporting",
    query: z.object({}),
    response: ReportStatus,
    handler: (ctx) => reportStatusView(ctx.ledger, { now: ctx.now(), settings: ctx.planSettings }),
  }),
  route({
    path: "/api/report/rows",
    summary: "Outbox rows",
    description:
      "Meter event rows of the reporting outbox, newest first: pending, sent, failed (stopped by a permanent Stripe error, with that error: `simmeter report --retry-failed` puts them back) or superseded; `late=true` lists rows stamped into a later invoice than their hour's.",
    tag: "reporting",
    query: OutboxRowParams,
    response: OutboxRowList,
    handler: (ctx, p) => outboxRowList(ctx.ledger, p),
  }),
  route({
    path: "/api/overview",
    summary: "Overview of the current billing periods",
    description:
      "Per mapped customer, the ledger side of its current billing period (by the stored subscription periods): counted, reported, pending, unreported, late usage in and usage carried out — the figures of `simmeter reconcile --period current --json` without the invoice quantity, which needs Stripe; what is not billed (unmapped usage as `simmeter usage --unmapped`, held usage and stopped rows as `simmeter report --status`); the outbox; quarantine and anomaly counts.",
    tag: "reporting",
    query: z.object({}),
    response: Overview,
    handler: async (ctx) =>
      overviewView(ctx.ledger, {
        now: ctx.now(),
        settings: ctx.planSettings,
        billing: await storedBilling(ctx),
      }),
  }),
  route({
    path: "/api/usage/series",
    summary: "Usage per hour or day over a range",
    description:
      "Counted bytes per hour or day, every bucket of the range present (zero when nothing was counted): of all SIMs, of one SIM, or of the SIM-hours attributed to one customer. A point equals the sum of its period's rows in `simmeter usage --by hour|day --json`.",
    tag: "usage",
    query: UsageSeriesParams,
    response: UsageSeries,
    handler: (ctx, p) => usageSeries(ctx.ledger, p, ctx.now()),
  }),
  route({
    path: "/api/ingest/lag",
    summary: "Ingest lag per hour",
    description:
      "Per hour of event time: events counted, and the mean and largest time from the event's own time to its receipt by simmeter (from the dedupe records; pruned after RETENTION_DAYS).",
    tag: "usage",
    query: IngestLagParams,
    response: IngestLag,
    handler: (ctx, p) => ingestLag(ctx.ledger, p, ctx.now()),
  }),
  route({
    path: "/api/customers/summary",
    summary: "Customers with their SIMs and bytes",
    description:
      "Every customer an assignment names, with the SIMs whose usage is attributed to it (or assigned to it and never used), its bytes and its subscription item as last looked up, ordered by customer id.",
    tag: "customers",
    query: CustomerSummaryParams,
    response: CustomerSummaryList,
    handler: async (ctx, p) => customerSummaryList(ctx.ledger, p, await storedBilling(ctx)),
  }),
  route({
    path: "/api/customers/{customer}",
    summary: "One customer",
    description:
      "A customer's assignments, its SIMs with the bytes attributed to it, and its subscription item as last looked up.",
    tag: "customers",
    path_params: CustomerParams,
    query: z.object({}),
    response: CustomerDetail,
    handler: async (ctx, p) => {
      try {
        return await customerDetail(ctx.ledger, p.customer, await storedBilling(ctx));
      } catch (err) {
        if (err instanceof UnknownCustomer) throw new NotFound(err.message);
        throw err;
      }
    },
  }),
  route({
    path: "/api/sims/{sim}",
    summary: "One SIM",
    description:
      "A SIM's sessions with their readings, its anomalies, its bytes per customer and its newest hours with the customer each is billed to, and the history that decides it: its own assignments (SIM SID and ICCID), the fleets its events named, and those fleets' assignments.",
    tag: "usage",
    path_params: SimParams,
    query: SimQuery,
    response: SimDetail,
    handler: async (ctx, p) => {
      try {
        return await simDetail(ctx.ledger, p.sim, p);
      } catch (err) {
        if (err instanceof UnknownSim) throw new NotFound(err.message);
        throw err;
      }
    },
  }),
];

/** The error body of every admin listener error (4xx and 5xx). */
export const ApiError = z
  .object({
    error: z.object({
      code: z.enum(["invalid_parameter", "unauthorized", "not_found", "internal_error"]),
      // 401 unauthorized: token missing or wrong; 403 unauthorized: no token configured and the
      // request's Host is not a loopback name
      message: z.string(),
      param: z.string().optional(),
    }),
  })
  .meta({ id: "Error" });
export type ApiError = z.output<typeof ApiError>;
