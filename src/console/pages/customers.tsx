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
  humanBytes,
  ReportingDisabled,
  Sid,
  simHref,
  Time,
} from "../layout.tsx";
import { UsageTable, usageChartSpec } from "./overview.tsx";

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
        <div class="table-wrap">
          <table class="striped" data-testid="customers">
            <thead>
              <tr>
                <th>Customer</th>
                <th class="num">SIMs</th>
                <th class="num">Bytes</th>
                <th>First hour</th>
                <th>Last hour</th>
                <th>Subscription</th>
                <th>Current period (UTC)</th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((c) => (
                <tr data-testid="customer-row" data-customer={c.customer_id}>
                  <td>
                    <a href={customerHref(c.customer_id)}>{c.customer_id}</a>
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
                      <>
                        <Time t={c.billing.period_start} /> → <Time t={c.billing.period_end} />
                      </>
                    ) : (
                      ""
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {list.has_more && (
        <p>
          <a
            href={`/console/customers?starting_after=${encodeURIComponent(list.next_starting_after ?? "")}`}
          >
            Next page →
          </a>
        </p>
      )}
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

function ParityTable({ rows }: { rows: { label: string; r: ParityRow | null }[] }): VNode {
  return (
    <div class="table-wrap">
      <table class="striped" data-testid="customer-parity">
        <thead>
          <tr>
            <th>Period</th>
            <th>Invoice</th>
            <th class="num">Counted</th>
            <th class="num">Late in</th>
            <th class="num">Carried out</th>
            <th class="num">Unreported</th>
            <th class="num">Reported</th>
            <th class="num">Invoice quantity</th>
            <th class="num">Difference</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(({ label, r }) =>
            !r ? (
              <tr>
                <td>{label}</td>
                <td colSpan={8} class="muted">
                  not available
                </td>
              </tr>
            ) : r.problem && !r.period_start ? (
              <tr data-testid="parity-row" data-period={label}>
                <td>{label}</td>
                <td colSpan={8} class="muted">
                  {r.problem}
                </td>
              </tr>
            ) : (
              <tr data-testid="parity-row" data-period={label}>
                <td class="small">
                  {label}
                  <br />
                  <Time t={r.period_start} /> → <Time t={r.period_end} />
                </td>
                <td class="small">
                  {r.invoice ? <code>{r.invoice}</code> : <span class="muted">—</span>}{" "}
                  {r.invoice_status && <span class="badge">{r.invoice_status}</span>}
                  {r.problem && <div class="muted">{r.problem}</div>}
                </td>
                {(["counted", "late_in", "carried_out", "unreported", "reported"] as const).map(
                  (k) => (
                    <td class="num" data-field={k} data-value={String(r[k])}>
                      {humanBytes(r[k])}
                    </td>
                  ),
                )}
                <td
                  class="num"
                  data-field="invoice_quantity"
                  data-value={r.invoice_quantity === null ? "" : String(r.invoice_quantity)}
                >
                  {r.invoice_quantity === null ? "—" : humanBytes(r.invoice_quantity)}
                </td>
                <td
                  class="num"
                  data-field="difference"
                  data-value={r.difference === null ? "" : String(r.difference)}
                >
                  {r.difference === null ? (
                    "—"
                  ) : (
                    <span
                      class={
                        r.difference === 0 && r.unreported === 0
                          ? "badge badge-ok"
                          : "badge badge-warn"
                      }
                    >
                      {r.difference.toLocaleString("en-US")}
                    </span>
                  )}
                </td>
              </tr>
            ),
          )}
        </tbody>
      </table>
    </div>
  );
}

function StatementSection({ d }: { d: CustomerPageData }): VNode {
  const c = d.customer.customer_id;
  const csv = `${customerHref(c)}/statement.csv?period=${d.statementPeriod}&by=${d.statementBy}`;
  return (
    <section>
      <h2 id="statement">Statement</h2>
      <form method="get" action={`${customerHref(c)}#statement`} class="inline">
        <select name="period" aria-label="period">
          <option value="current" selected={d.statementPeriod === "current"}>
            current period
          </option>
          <option value="previous" selected={d.statementPeriod === "previous"}>
            previous period
          </option>
        </select>
        <select name="statement_by" aria-label="lines">
          <option value="period" selected={d.statementBy === "period"}>
            one line per SIM
          </option>
          <option value="day" selected={d.statementBy === "day"}>
            per SIM and day
          </option>
        </select>
        <input type="hidden" name="by" value={d.by} />
        <button type="submit" class="secondary">
          Show
        </button>
        {d.statement && (
          <a href={csv} class="csv-link" data-testid="statement-csv" download>
            Download CSV
          </a>
        )}
      </form>
      {!d.reporting ? (
        <ReportingDisabled />
      ) : !d.statement ? (
        <p class="muted">{d.statementError ?? "no statement"}</p>
      ) : (
        <>
          <p class="small muted">
            Invoice {d.statement.invoice ? <code>{d.statement.invoice}</code> : "(none yet)"},
            period <Time t={d.statement.period_start} /> → <Time t={d.statement.period_end} />. Same
            as{" "}
            <code>
              simmeter statement --customer {c} --period {d.statementPeriod}
              {d.statementBy === "day" ? " --by day" : ""}
            </code>
            .
          </p>
          <div class="table-wrap">
            <table class="striped" data-testid="statement">
              <thead>
                <tr>
                  <th>SIM</th>
                  <th>ICCID</th>
                  <th>Name</th>
                  <th>Fleet</th>
                  {d.statementBy === "day" && <th>Day</th>}
                  <th class="num">Bytes</th>
                </tr>
              </thead>
              <tbody>
                {d.statement.lines.map((l) => (
                  <tr
                    data-testid="statement-line"
                    data-sim={l.sim_sid}
                    data-day={l.day ?? ""}
                    data-value={String(l.bytes)}
                  >
                    <td>
                      <Sid id={l.sim_sid} href={simHref(l.sim_sid)} />
                    </td>
                    <td class="small mono">{l.iccid}</td>
                    <td class="small">{l.unique_name}</td>
                    <td class="small">{l.fleet_sid && <Sid id={l.fleet_sid} />}</td>
                    {d.statementBy === "day" && <td class="small">{l.day}</td>}
                    <td class="num">{humanBytes(l.bytes)}</td>
                  </tr>
                ))}
                {d.statement.late_in.map((l) => (
                  <tr class="muted">
                    <td colSpan={d.statementBy === "day" ? 5 : 4}>
                      late usage from an earlier period, hour <Time t={l.hour} />
                    </td>
                    <td class="num">{humanBytes(l.bytes)}</td>
                  </tr>
                ))}
                {d.statement.carried_out !== 0 && (
                  <tr class="muted">
                    <td colSpan={d.statementBy === "day" ? 5 : 4}>
                      usage of this period billed on a later invoice
                    </td>
                    <td class="num">−{humanBytes(d.statement.carried_out)}</td>
                  </tr>
                )}
                {d.statement.unreported !== 0 && (
                  <tr class="muted">
                    <td colSpan={d.statementBy === "day" ? 5 : 4}>not yet reported to Stripe</td>
                    <td class="num">−{humanBytes(d.statement.unreported)}</td>
                  </tr>
                )}
              </tbody>
              <tfoot>
                <tr>
                  <th colSpan={d.statementBy === "day" ? 5 : 4}>
                    Total (invoice line quantity{" "}
                    {d.statement.invoice_quantity === null
                      ? "not yet known"
                      : humanBytes(d.statement.invoice_quantity)}
                    )
                  </th>
                  <th class="num">
                    <Bytes n={d.statement.total} testid="statement-total" />
                    {d.statement.invoice_quantity !== null && (
                      <span
                        hidden
                        data-testid="statement-invoice-quantity"
                        data-value={String(d.statement.invoice_quantity)}
                      />
                    )}
                  </th>
                </tr>
              </tfoot>
            </table>
          </div>
        </>
      )}
    </section>
  );
}

export function CustomerPage({ d }: { d: CustomerPageData }): VNode {
  const c = d.customer;
  const b = c.billing;
  return (
    <>
      <p class="small">
        <a href="/console/customers">← Customers</a>
      </p>
      <h1 data-testid="customer-id">{c.customer_id}</h1>
      <section class="figures">
        <article>
          <span class="figure-label">Bytes, all time</span>
          <span class="figure-value">
            <Bytes n={c.bytes} testid="customer-bytes" />
          </span>
        </article>
        <article>
          <span class="figure-label">SIMs</span>
          <span class="figure-value">
            <Count n={c.sims.length} testid="customer-sims" />
          </span>
        </article>
        <article>
          <span class="figure-label">Subscription</span>
          <span class="figure-value small">
            {b ? (b.state === "ok" ? "active" : b.state) : "not looked up"}
          </span>
          <span class="figure-note">
            {b?.period_start ? (
              <>
                period <Time t={b.period_start} /> → <Time t={b.period_end} />
              </>
            ) : (
              (b?.detail ?? "")
            )}
          </span>
        </article>
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
        <div class="table-wrap">
          <table class="striped" data-testid="customer-sims-table">
            <thead>
              <tr>
                <th>SIM</th>
                <th>ICCID</th>
                <th>Name</th>
                <th>Fleet</th>
                <th class="num">Bytes billed here</th>
                <th>First hour</th>
                <th>Last hour</th>
              </tr>
            </thead>
            <tbody>
              {c.sims.map((s) => (
                <tr data-testid="customer-sim" data-sim={s.sim_sid} data-value={String(s.bytes)}>
                  <td>
                    <a href={simHref(s.sim_sid)} data-testid="sim-link">
                      <code class="mono">{s.sim_sid}</code>
                    </a>
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
            </tbody>
          </table>
        </div>
      )}

      <h2>Assignments</h2>
      <div class="table-wrap">
        <table class="striped" data-testid="customer-assignments">
          <thead>
            <tr>
              <th class="num">#</th>
              <th>Target</th>
              <th>Effective from</th>
              <th>Made</th>
            </tr>
          </thead>
          <tbody>
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
          </tbody>
        </table>
      </div>
    </>
  );
}
