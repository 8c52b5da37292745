// A customer's invoice parity (current and previous period) and its per-SIM statement.
import type { VNode } from "preact";
import type { ParityRow } from "../../billing/parity.ts";
import {
  Bytes,
  customerHref,
  humanBytes,
  ReportingDisabled,
  Sid,
  simHref,
  Time,
} from "../layout.tsx";
import type { CustomerPageData } from "./customers.tsx";
import { Dash, HiddenValue, Period, SIM_COLUMNS, Table } from "./fragments.tsx";

export function ParityTable({ rows }: { rows: { label: string; r: ParityRow | null }[] }): VNode {
  return (
    <Table
      testid="customer-parity"
      wrap
      cols={[
        "Period",
        "Invoice",
        { num: "Counted" },
        { num: "Late in" },
        { num: "Carried out" },
        { num: "Unreported" },
        { num: "Reported" },
        { num: "Invoice quantity" },
        { num: "Difference" },
      ]}
    >
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
              <Period start={r.period_start} end={r.period_end} />
            </td>
            <td class="small">
              {r.invoice ? <code>{r.invoice}</code> : <Dash />}{" "}
              {r.invoice_status && <span class="badge">{r.invoice_status}</span>}
              {r.problem && <div class="muted">{r.problem}</div>}
            </td>
            {(["counted", "late_in", "carried_out", "unreported", "reported"] as const).map((k) => (
              <td class="num" data-field={k} data-value={String(r[k])}>
                {humanBytes(r[k])}
              </td>
            ))}
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
                    r.difference === 0 && r.unreported === 0 ? "badge badge-ok" : "badge badge-warn"
                  }
                >
                  {r.difference.toLocaleString("en-US")}
                </span>
              )}
            </td>
          </tr>
        ),
      )}
    </Table>
  );
}

export function StatementSection({ d }: { d: CustomerPageData }): VNode {
  const c = d.customer.customer_id;
  const csv = `${customerHref(c)}/statement.csv?period=${d.statementPeriod}&by=${d.statementBy}`;
  const byDay = d.statementBy === "day";
  /** the columns before Bytes */
  const span = byDay ? 5 : 4;
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
            period <Period start={d.statement.period_start} end={d.statement.period_end} />. Same as{" "}
            <code>
              simmeter statement --customer {c} --period {d.statementPeriod}
              {byDay ? " --by day" : ""}
            </code>
            .
          </p>
          <Table
            testid="statement"
            wrap
            cols={[...SIM_COLUMNS, ...(byDay ? ["Day"] : []), { num: "Bytes" }]}
            foot={
              <tfoot>
                <tr>
                  <th colSpan={span}>
                    Total (invoice line quantity{" "}
                    {d.statement.invoice_quantity === null
                      ? "not yet known"
                      : humanBytes(d.statement.invoice_quantity)}
                    )
                  </th>
                  <th class="num">
                    <Bytes n={d.statement.total} testid="statement-total" />
                    {d.statement.invoice_quantity !== null && (
                      <HiddenValue
                        testid="statement-invoice-quantity"
                        value={d.statement.invoice_quantity}
                      />
                    )}
                  </th>
                </tr>
              </tfoot>
            }
          >
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
                {byDay && <td class="small">{l.day}</td>}
                <td class="num">{humanBytes(l.bytes)}</td>
              </tr>
            ))}
            {d.statement.late_in.map((l) => (
              <tr class="muted">
                <td colSpan={span}>
                  late usage from an earlier period, hour <Time t={l.hour} />
                </td>
                <td class="num">{humanBytes(l.bytes)}</td>
              </tr>
            ))}
            {d.statement.carried_out !== 0 && (
              <tr class="muted">
                <td colSpan={span}>usage of this period billed on a later invoice</td>
                <td class="num">−{humanBytes(d.statement.carried_out)}</td>
              </tr>
            )}
            {d.statement.unreported !== 0 && (
              <tr class="muted">
                <td colSpan={span}>not yet reported to Stripe</td>
                <td class="num">−{humanBytes(d.statement.unreported)}</td>
              </tr>
            )}
          </Table>
        </>
      )}
    </section>
  );
}
