// The customers list, a customer (usage, invoice parity, statement and its CSV) and a SIM.
import type { Request, Response } from "express";
import { invoiceParity, statement } from "../../billing/parity.ts";
import {
  CustomerSummaryParams,
  customerDetail,
  customerSummaryList,
  UnknownCustomer,
} from "../../views/customer-usage.ts";
import { statementCsv } from "../../views/parity.ts";
import { UsageSeriesParams, usageSeries } from "../../views/series.ts";
import { SimQuery, simDetail, UnknownSim } from "../../views/sim.ts";
import { periodsNow } from "../deps.ts";
import { CustomerPage, type CustomerPageData, CustomersPage } from "../pages/customers.tsx";
import { SimPage } from "../pages/sim.tsx";
import { cursorOf, type Kit, one, PageError } from "./kit.ts";

const customerParam = (req: Request): string => {
  const c = String(req.params.customer ?? "");
  if (!/^cus_[A-Za-z0-9]{1,64}$/.test(c))
    throw new PageError(404, `${c} is not a Stripe customer id (cus_…)`);
  return c;
};

/** The statement a query asks for: ?period=current|previous, ?<byKey>=period|day. */
const statementOf = (req: Request, byKey: "by" | "statement_by") => ({
  period: one(req.query.period) === "previous" ? ("previous" as const) : ("current" as const),
  by: one(req.query[byKey]) === "day" ? ("day" as const) : ("period" as const),
});

export function customerRoutes({ router, deps, api, send, stored }: Kit): void {
  router.get("/customers", async (req: Request, res: Response) => {
    const p = CustomerSummaryParams.parse({ limit: 1000, ...cursorOf(req) });
    send(
      req,
      res,
      "Customers",
      CustomersPage({ list: await customerSummaryList(api.ledger, p, await stored()) }),
    );
  });

  router.get("/customers/:customer", async (req: Request, res: Response) => {
    const c = customerParam(req);
    let customer: CustomerPageData["customer"];
    try {
      customer = await customerDetail(api.ledger, c, await stored());
    } catch (err) {
      if (err instanceof UnknownCustomer) throw new PageError(404, err.message);
      throw err;
    }
    const now = api.now();
    const by = one(req.query.by) === "hour" ? "hour" : "day";
    const { period: statementPeriod, by: statementBy } = statementOf(req, "statement_by");
    const d: CustomerPageData = {
      customer,
      usage: await usageSeries(
        api.ledger,
        UsageSeriesParams.parse({ granularity: by, customer: c }),
        now,
      ),
      by,
      reporting: Boolean(api.stripe),
      parity: null,
      statement: null,
      statementError: null,
      statementPeriod,
      statementBy,
      stripeError: null,
    };
    if (api.stripe) {
      const periods = await periodsNow(deps);
      d.stripeError = periods.error;
      const b = periods.billing.get(c);
      if (!b) d.statementError = `${c} was not found among the customers looked up in Stripe`;
      else {
        try {
          d.parity = {
            current: await invoiceParity(api.ledger, api.stripe.client, b, "current"),
            previous: await invoiceParity(api.ledger, api.stripe.client, b, "previous"),
          };
          d.statement = await statement(
            api.ledger,
            api.stripe.client,
            b,
            statementPeriod,
            statementBy,
          );
        } catch (err) {
          d.statementError = (err as Error).message;
        }
      }
    }
    send(req, res, c, CustomerPage({ d }));
  });

  router.get("/customers/:customer/statement.csv", async (req: Request, res: Response) => {
    const c = customerParam(req);
    if (!api.stripe)
      throw new PageError(404, "reporting disabled: no STRIPE_SECRET_KEY, so no statement");
    const { period, by } = statementOf(req, "by");
    const periods = await periodsNow(deps);
    const b = periods.billing.get(c);
    if (!b) throw new PageError(404, `${c} is not a mapped customer`);
    const s = await statement(api.ledger, api.stripe.client, b, period, by);
    res
      .type("text/csv; charset=utf-8")
      .set(
        "Content-Disposition",
        `attachment; filename="statement-${c}-${period}${by === "day" ? "-by-day" : ""}.csv"`,
      )
      .send(statementCsv(s));
  });

  router.get("/sims/:sim", async (req: Request, res: Response) => {
    const sim = String(req.params.sim ?? "");
    if (!/^HS[0-9a-fA-F]{32}$/.test(sim)) throw new PageError(404, `${sim} is not a Super SIM SID`);
    try {
      const s = await simDetail(api.ledger, sim, SimQuery.parse({}));
      send(
        req,
        res,
        `SIM ${sim}`,
        SimPage({ s, customers: (await api.ledger.customers.billed()).sort() }),
      );
    } catch (err) {
      if (err instanceof UnknownSim) throw new PageError(404, err.message);
      throw err;
    }
  });
}
