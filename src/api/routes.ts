// The admin API's routes, in one table: the router (src/api/router.ts) serves them and the OpenAPI
// document (src/api/openapi.ts) describes them from the same zod schemas, so the two cannot drift.
// Each handler is one call to a view (src/views/): the same function the CLI's --json prints.
import { z } from "zod";
import type { CustomerBilling } from "../billing/periods.ts";
import type { Db } from "../db/client.ts";
import { listQuarantineRows } from "../ingest/requeue.ts";
import type { PlanSettings } from "../reporting/outbox.ts";
import { AssignmentList, AssignmentParams, assignmentList } from "../views/customers.ts";
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
  UnmappedList,
  UnmappedParams,
  UsageList,
  UsageParams,
  unmappedList,
  usageList,
} from "../views/usage.ts";

export type ApiContext = {
  db: Db;
  now: () => number;
  planSettings: PlanSettings;
  /** the stored subscription periods (the reporter refreshes them) */
  billing?: () => ReadonlyMap<string, CustomerBilling>;
};

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
  handler: (ctx: ApiContext, params: Record<string, unknown>) => unknown;
};

function route<Q extends AnyObject, P extends AnyObject = z.ZodObject<Record<never, never>>>(r: {
  path: string;
  summary: string;
  description: string;
  tag: string;
  path_params?: P;
  query: Q;
  response: z.ZodType;
  handler: (ctx: ApiContext, params: z.output<Q> & z.output<P>) => unknown;
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
    handler: (ctx, p) => usageList(ctx.db, p),
  }),
  route({
    path: "/api/usage/unmapped",
    summary: "Usage no customer assignment covers",
    description:
      "SIMs with counted bytes that no assignment covers: kept, and reported as soon as an assignment covers them. The same answer as `simmeter usage --unmapped --json`.",
    tag: "usage",
    query: UnmappedParams,
    response: UnmappedList,
    handler: (ctx, p) => unmappedList(ctx.db, p),
  }),
  route({
    path: "/api/quarantine",
    summary: "Quarantined events",
    description:
      "Authenticated events that could not be counted, newest first, with the raw event as received. The same answer as `simmeter quarantine list --json`.",
    tag: "quarantine",
    query: QuarantineParams,
    response: QuarantineList,
    handler: (ctx, p) => quarantineList(ctx.db, p),
  }),
  route({
    path: "/api/quarantine/{id}",
    summary: "One quarantined event",
    description: "One quarantine row by id.",
    tag: "quarantine",
    path_params: QuarantineId,
    query: z.object({}),
    response: QuarantineItem,
    handler: (ctx, p) => {
      const [row] = listQuarantineRows(ctx.db, { ids: [p.id], limit: 1 });
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
    handler: (ctx, p) => anomalyList(ctx.db, p),
  }),
  route({
    path: "/api/customers",
    summary: "Customer assignments",
    description:
      "SIM, ICCID and fleet assignments to Stripe customers with their effective times, in the order they were made. The same answer as `simmeter customers list --json`.",
    tag: "customers",
    query: AssignmentParams,
    response: AssignmentList,
    handler: (ctx, p) => assignmentList(ctx.db, p),
  }),
  route({
    path: "/api/report/status",
    summary: "Billing sync status",
    description:
      "The outbox by state, pending and stopped rows, and the counted usage the next report pass would hold because no invoice would carry it (by the stored subscription periods). The same answer as `simmeter report --status --json`.",
    tag: "reporting",
    query: z.object({}),
    response: ReportStatus,
    handler: (ctx) =>
      reportStatusView(ctx.db, {
        now: ctx.now(),
        settings: ctx.planSettings,
        ...(ctx.billing ? { billing: ctx.billing() } : {}),
      }),
  }),
];

/** The error body of every admin listener error (4xx and 5xx). */
export const ApiError = z
  .object({
    error: z.object({
      code: z.enum(["invalid_parameter", "unauthorized", "not_found", "internal_error"]),
      message: z.string(),
      param: z.string().optional(),
    }),
  })
  .meta({ id: "Error" });
export type ApiError = z.output<typeof ApiError>;
