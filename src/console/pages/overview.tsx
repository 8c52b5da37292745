import type { VNode } from "preact";
import type { ParityRow } from "../../billing/parity.ts";
import type { Overview } from "../../views/overview.ts";
import type { IngestLag, UsageSeries } from "../../views/series.ts";
import {
  ago,
  Bytes,
  Chart,
  Count,
  Empty,
  Figure,
  humanBytes,
  ReportingDisabled,
  Time,
} from "../layout.tsx";
import {
  CustomerLink,
  Dash,
  HiddenValue,
  Period,
  Table,
  UsageTable,
  usageChartSpec,
} from "./fragments.tsx";

export type QueueDepth = { waiting: number; active: number; delayed: number; failed: number };

export type OverviewData = {
  now: number;
  overview: Overview;
  /** invoice parity of the current periods (null: reporting disabled or Stripe unreachable) */
  parity: ParityRow[] | null;
  periodsSource: "stripe" | "stored";
  stripeError: string | null;
  reporting: boolean;
  usage: UsageSeries;
  lag: IngestLag;
  depth: QueueDepth | { error: string } | null;
  /** the reporter's last finished run, from its queue (null: none on record, or no queue) */
  lastRunAt: number | null;
};

export function OverviewPage({ d }: { d: OverviewData }): VNode {
  const o = d.overview;
  const invoiced = d.parity ? d.parity.reduce((n, r) => n + (r.invoice_quantity ?? 0), 0) : null;
  const parityOf = new Map((d.parity ?? []).map((r) => [r.customer, r]));
  const unbilled = o.unbilled.unmapped_bytes + o.unbilled.held_bytes + o.unbilled.stopped_bytes;
  const lastSent = o.last_sent_at ? Date.parse(o.last_sent_at) : null;
  const lastSuccess = Math.max(lastSent ?? -1, d.lastRunAt ?? -1);
  const depth = d.depth && !("error" in d.depth) ? d.depth : null;
  const lagPoints = d.lag.points;
  return (
    <>
      <h1>Overview</h1>
      <p class="muted small">
        Current billing period of each customer (
        {d.periodsSource === "stripe"
          ? "periods looked up in Stripe now"
          : "periods as the reporter last stored them"}
        ), as of <Time t={d.now} seconds />.
        {d.stripeError && <span class="badge badge-warn">Stripe: {d.stripeError}</span>}
      </p>
      <section class="figures" aria-label="current billing periods">
        <Figure
          label="Counted"
          href="/console/customers"
          note={`in ${o.customers} customers' current periods`}
        >
          <Bytes n={o.totals.counted} testid="overview-counted" />
        </Figure>
        <Figure
          label="Reported to Stripe"
          href="/console/billing"
          note={`${humanBytes(o.totals.pending)} of it pending`}
        >
          <Bytes n={o.totals.reported} testid="overview-reported" />
        </Figure>
        <Figure
          label="On invoice previews"
          href="/console/customers"
          note={invoiced === null ? "reporting disabled" : "Stripe's upcoming invoices"}
          warn={invoiced !== null && invoiced !== o.totals.reported}
        >
          {invoiced === null ? <Dash /> : <Bytes n={invoiced} testid="overview-invoiced" />}
        </Figure>
        <Figure
          label="Unreported"
          href="/console/billing"
          note="counted, in no outbox row yet"
          warn={o.totals.unreported !== 0}
        >
          <Bytes n={o.totals.unreported} testid="overview-unreported" />
        </Figure>
        <Figure
          label="Unbilled"
          href="/console/billing"
          note="unmapped + held + stopped"
          warn={unbilled !== 0}
        >
          <Bytes n={unbilled} testid="overview-unbilled" />
        </Figure>
      </section>
      <section class="figures" aria-label="unbilled usage">
        <Figure
          label="Unmapped"
          href="/console/unmapped"
          note={`${o.unbilled.unmapped_sims} SIM(s) no assignment covers`}
          warn={o.unbilled.unmapped_bytes !== 0}
        >
          <Bytes n={o.unbilled.unmapped_bytes} testid="overview-unmapped" />
        </Figure>
        <Figure
          label="Held (no subscription…)"
          href="/console/billing#held"
          note={
            o.unbilled.held.length
              ? o.unbilled.held.map((h) => `${h.reason}: ${h.customers}`).join(", ")
              : "no invoice would carry it"
          }
          warn={o.unbilled.held_bytes !== 0}
        >
          <Bytes n={o.unbilled.held_bytes} testid="overview-held" />
        </Figure>
        <Figure
          label="Stopped rows"
          href="/console/billing#stopped"
          note={humanBytes(o.unbilled.stopped_bytes)}
          warn={o.unbilled.stopped_rows !== 0}
        >
          <Count n={o.unbilled.stopped_rows} testid="overview-stopped-rows" />
          <HiddenValue testid="overview-stopped-bytes" value={o.unbilled.stopped_bytes} />
        </Figure>
        <Figure
          label="Pending rows"
          href="/console/billing#pending"
          note={
            o.outbox.oldest_pending_at
              ? `oldest ${o.outbox.oldest_pending_at.slice(0, 16).replace("T", " ")}`
              : "none waiting"
          }
        >
          <Count n={o.outbox.pending_rows} testid="overview-pending-rows" />
        </Figure>
      </section>
      <section class="figures" aria-label="operations">
        <Figure
          label="Last successful report"
          href="/console/billing"
          note={
            lastSuccess > 0
              ? ago(d.now - lastSuccess)
              : d.reporting
                ? "none on record"
                : "reporting disabled"
          }
        >
          {lastSuccess > 0 ? (
            <span
              class="figure-time"
              data-testid="overview-last-report"
              data-value={new Date(lastSuccess).toISOString()}
            >
              <Time t={lastSuccess} />
            </span>
          ) : (
            <Dash />
          )}
        </Figure>
        <Figure
          label="Ingest queue"
          href="/console/queues"
          note={
            depth
              ? `${depth.active} active, ${depth.delayed} delayed, ${depth.failed} failed`
              : d.depth && "error" in d.depth
                ? d.depth.error
                : "no Redis connection"
          }
          warn={(depth?.failed ?? 0) > 0 || (d.depth !== null && "error" in d.depth)}
        >
          {depth ? <Count n={depth.waiting} testid="overview-queue-waiting" /> : <Dash />}
          {depth && <HiddenValue testid="overview-queue-failed" value={depth.failed} />}
        </Figure>
        <Figure
          label="Quarantine"
          href="/console/quarantine"
          note={`${o.quarantine.rows} row(s) in all`}
          warn={o.quarantine.open !== 0}
        >
          <Count n={o.quarantine.open} testid="overview-quarantine-open" />
          <HiddenValue testid="overview-quarantine-rows" value={o.quarantine.rows} />
        </Figure>
        <Figure label="Anomalies" href="/console/anomalies" note="readings that did not add up">
          <Count n={o.anomalies.rows} testid="overview-anomalies" />
        </Figure>
      </section>

      <div class="grid-2">
        <section>
          <h2>Usage per hour, last 72 h</h2>
          <Chart
            id="chart-usage"
            spec={usageChartSpec(d.usage)}
            label="bytes counted per hour over the last 72 hours"
          />
          <p class="small muted">
            Total <Bytes n={d.usage.total} testid="overview-usage-72h" /> (all SIMs, by the hour of
            each reading)
          </p>
          <UsageTable series={d.usage} testid="overview-usage-table" />
        </section>
        <section>
          <h2>Ingest lag per hour</h2>
          <Chart
            id="chart-lag"
            spec={{
              type: "line",
              unit: "ms",
              unit2: "count",
              labels: lagPoints.map((p) => p.hour.slice(5, 16).replace("T", " ")),
              datasets: [
                { label: "mean lag", data: lagPoints.map((p) => p.avg_lag_ms) },
                { label: "largest lag", data: lagPoints.map((p) => p.max_lag_ms) },
                {
                  label: "events",
                  data: lagPoints.map((p) => p.events),
                  yAxisID: "y2",
                  color: "muted",
                },
              ],
            }}
            label="ingest lag per hour"
          />
          <p class="small muted">
            Event time → received by simmeter, per hour of event time (dedupe records). Time in the
            queue: the ingest queue figure above.
          </p>
          <details>
            <summary class="small">Table</summary>
            <Table
              testid="overview-lag-table"
              wrap
              cols={[
                "Hour (UTC)",
                { num: "Events" },
                { num: "Mean lag (ms)" },
                { num: "Largest lag (ms)" },
              ]}
            >
              {lagPoints
                .filter((p) => p.events > 0)
                .map((p) => (
                  <tr data-hour={p.hour} data-value={String(p.events)}>
                    <td>{p.hour.slice(0, 16).replace("T", " ")}</td>
                    <td class="num">{p.events}</td>
                    <td class="num">{p.avg_lag_ms}</td>
                    <td class="num">{p.max_lag_ms}</td>
                  </tr>
                ))}
            </Table>
          </details>
        </section>
      </div>

      <h2>Customers' current periods</h2>
      {!d.reporting && <ReportingDisabled />}
      {o.periods.length === 0 ? (
        <Empty>
          No customer is mapped yet (simmeter customers import, or assign an unmapped SIM).
        </Empty>
      ) : (
        <Table
          testid="overview-periods"
          wrap
          cols={[
            "Customer",
            "Period (UTC)",
            { num: "Counted" },
            { num: "Reported" },
            { num: "Invoice preview" },
            { num: "Difference" },
            { num: "Unreported" },
            "Note",
          ]}
        >
          {o.periods.map((p) => {
            const r = parityOf.get(p.customer_id);
            const q = r?.invoice_quantity ?? null;
            return (
              <tr data-testid="period-row" data-customer={p.customer_id}>
                <td>
                  <CustomerLink id={p.customer_id} />
                </td>
                <td class="small">
                  {p.period_start ? (
                    <Period start={p.period_start} end={p.period_end} />
                  ) : (
                    <span class="badge badge-warn">{p.state}</span>
                  )}
                </td>
                <td class="num" data-field="counted" data-value={String(p.counted)}>
                  {humanBytes(p.counted)}
                </td>
                <td class="num" data-field="reported" data-value={String(p.reported)}>
                  {humanBytes(p.reported)}
                </td>
                <td
                  class="num"
                  data-field="invoice_quantity"
                  data-value={q === null ? "" : String(q)}
                >
                  {q === null ? <Dash /> : humanBytes(q)}
                </td>
                <td
                  class="num"
                  data-field="difference"
                  data-value={
                    r?.difference === null || r?.difference === undefined
                      ? ""
                      : String(r.difference)
                  }
                >
                  {r?.difference === null || r?.difference === undefined ? (
                    <Dash />
                  ) : (
                    <span class={r.difference === 0 ? "badge badge-ok" : "badge badge-warn"}>
                      {r.difference.toLocaleString("en-US")}
                    </span>
                  )}
                </td>
                <td class="num" data-field="unreported" data-value={String(p.unreported)}>
                  {humanBytes(p.unreported)}
                </td>
                <td class="small muted">{r?.problem ?? p.detail ?? ""}</td>
              </tr>
            );
          })}
        </Table>
      )}
    </>
  );
}
