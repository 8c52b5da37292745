import type { VNode } from "preact";
import type { ParityRow, Statement } from "../../billing/parity.ts";
import type { CustomerDetail, CustomerSummary } from "../../views/customer-usage.ts";
import type { List } from "../../views/json.ts";
import type { UsageSeries } from "../../views/series.ts";
import {
  Bytes,
  Chart,
  Count,
  customerHref,
  Empty,
  Figure,
  humanBytes,
  ReportingDisabled,
  Sid,
  simHref,
  Time,
} from "../layout.tsx";
import {
  after,
  BackLink,
  CustomerLink,
  MoreLink,
  Period,
  SIM_COLUMNS,
  SimLink,
  Table,
  UsageTable,
  usageChartSpec,
} from "./fragments.tsx";
import { ParityTable, StatementSection } from "./invoice.tsx";

export function CustomersPage({ list }: { list: List<CustomerSummary> }): VNode {
  return (
    <>
      <h1>Customers</h1>
      <p class="muted small">
        Every customer an assignment names, with the SIMs whose usage is billed to it and its bytes
        (all counted time). Same as <code>GET /api/customers/summary</code>.
      </p>
      {list.data.length === 0 ? (
        <Empty>No customer assignments yet.</Empty>
      ) : (
        <Table
          testid="customers"
          wrap
          cols={[
            "Customer",
            { num: "SIMs" },
            { num: "Bytes" },
            "First hour",
            "Last hour",
            "Subscription",
            "Current period (UTC)",
          ]}
        >
          {list.data.map((c) => (
            <tr data-testid="customer-row" data-customer={c.customer_id}>
              <td>
                <CustomerLink id={c.customer_id} />
              </td>
              <td class="num" data-field="sims" data-value={String(c.sims)}>
                {c.sims}
              </td>
              <td class="num" data-field="bytes" data-value={String(c.bytes)}>
                {humanBytes(c.bytes)}
              </td>
              <td class="small">
                <Time t={c.first_hour} />
              </td>
              <td class="small">
                <Time t={c.last_hour} />
              </td>
              <td>
                {c.billing ? (
                  <span
                    class={c.billing.state === "ok" ? "badge badge-ok" : "badge badge-warn"}
                    title={c.billing.detail ?? ""}
                  >
                    {c.billing.state === "ok" ? "active" : c.billing.state}
                  </span>
                ) : (
                  <span class="badge">not looked up</span>
                )}
              </td>
              <td class="small">
                {c.billing?.period_start ? (
                  <Period start={c.billing.period_start} end={c.billing.period_end} />
                ) : (
                  ""
                )}
              </td>
            </tr>
          ))}
        </Table>
      )}
      <MoreLink list={list} href={after("/console/customers")} label="Next page →" />
    </>
  );
}

export type CustomerPageData = {
  customer: CustomerDetail;
  usage: UsageSeries;
  by: "day" | "hour";
  reporting: boolean;
  parity: { current: ParityRow | null; previous: ParityRow | null } | null;
  statement: Statement | null;
  statementError: string | null;
  statementPeriod: "current" | "previous";
  statementBy: "period" | "day";
  stripeError: string | null;
};

export function CustomerPage({ d }: { d: CustomerPageData }): VNode {
  const c = d.customer;
  const b = c.billing;
  return (
    <>
      <BackLink href="/console/customers" label="Customers" />
      <h1 data-testid="customer-id">{c.customer_id}</h1>
      <section class="figures">
        <Figure label="Bytes, all time">
          <Bytes n={c.bytes} testid="customer-bytes" />
        </Figure>
        <Figure label="SIMs">
          <Count n={c.sims.length} testid="customer-sims" />
        </Figure>
        <Figure
          label="Subscription"
          small
          note={
            b?.period_start ? (
              <>
                period <Period start={b.period_start} end={b.period_end} />
              </>
            ) : (
              (b?.detail ?? "")
            )
          }
        >
          {b ? (b.state === "ok" ? "active" : b.state) : "not looked up"}
        </Figure>
      </section>

      <h2>Usage per {d.by}</h2>
      <p class="small">
        {d.by === "day" ? (
          <>
            Last 30 days ·{" "}
            <a href={`${customerHref(c.customer_id)}?by=hour`}>per hour, last 72 h</a>
          </>
        ) : (
          <>
            Last 72 hours ·{" "}
            <a href={`${customerHref(c.customer_id)}?by=day`}>per day, last 30 days</a>
          </>
        )}
      </p>
      <Chart
        id="chart-customer-usage"
        spec={usageChartSpec(d.usage)}
        label={`bytes billed to ${c.customer_id} per ${d.by}`}
      />
      <p class="small muted">
        Total in range <Bytes n={d.usage.total} testid="customer-usage-total" />: the SIM-hours
        billed to this customer.
      </p>
      <UsageTable series={d.usage} testid="customer-usage-table" />

      <h2>Invoice parity</h2>
      {d.stripeError && <p class="badge badge-warn">Stripe: {d.stripeError}</p>}
      {!d.reporting ? (
        <ReportingDisabled />
      ) : (
        <ParityTable
          rows={[
            { label: "current", r: d.parity?.current ?? null },
            { label: "previous", r: d.parity?.previous ?? null },
          ]}
        />
      )}
      <p class="small muted">
        difference = invoice quantity − reported; the same rows as{" "}
        <code>simmeter reconcile --period current|previous --json</code>.
      </p>

      <StatementSection d={d} />

      <h2>SIMs</h2>
      {c.sims.length === 0 ? (
        <Empty>No SIM yet.</Empty>
      ) : (
        <Table
          testid="customer-sims-table"
          wrap
          cols={[...SIM_COLUMNS, { num: "Bytes billed here" }, "First hour", "Last hour"]}
        >
          {c.sims.map((s) => (
            <tr data-testid="customer-sim" data-sim={s.sim_sid} data-value={String(s.bytes)}>
              <td>
                <SimLink sim={s.sim_sid} testid="sim-link" />
              </td>
              <td class="small mono">{s.iccid}</td>
              <td class="small">{s.unique_name}</td>
              <td class="small">{s.fleet_sid && <Sid id={s.fleet_sid} />}</td>
              <td class="num">{humanBytes(s.bytes)}</td>
              <td class="small">
                <Time t={s.first_hour} />
              </td>
              <td class="small">
                <Time t={s.last_hour} />
              </td>
            </tr>
          ))}
        </Table>
      )}

      <h2>Assignments</h2>
      <Table
        testid="customer-assignments"
        wrap
        cols={[{ num: "#" }, "Target", "Effective from", "Made"]}
      >
        {c.assignments.map((a) => (
          <tr data-id={String(a.id)}>
            <td class="num">{a.id}</td>
            <td>
              {a.target_type}{" "}
              {a.target_type === "sim" ? (
                <Sid id={a.target_id} href={simHref(a.target_id)} />
              ) : (
                <Sid id={a.target_id} />
              )}
            </td>
            <td>
              <Time t={a.effective_from} />
            </td>
            <td class="small">
              <Time t={a.created_at} seconds />
            </td>
          </tr>
        ))}
      </Table>
    </>
  );
}
