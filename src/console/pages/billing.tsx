import type { VNode } from "preact";
import type { List } from "../../views/json.ts";
import type { OutboxRow } from "../../views/outbox.ts";
import type { ReportStatus } from "../../views/report.ts";
import { ago, Bytes, Count, Empty, Figure, humanBytes, Time } from "../layout.tsx";
import { BackLink, ConfirmForm, CustomerLink, Table } from "./fragments.tsx";

export type BillingData = {
  now: number;
  status: ReportStatus;
  stopped: List<OutboxRow>;
  pending: List<OutboxRow>;
  late: List<OutboxRow>;
  lastSentAt: string | null;
  lastRunAt: number | null;
  reporting: boolean;
  reporterHere: boolean;
  periodsSource: "stripe" | "stored";
};

function Rows({
  list,
  testid,
  error,
}: {
  list: List<OutboxRow>;
  testid: string;
  error?: boolean;
}): VNode {
  if (list.data.length === 0) return <Empty>None.</Empty>;
  return (
    <div class="table-wrap">
      <Table
        testid={testid}
        small
        cols={[
          "Customer",
          "Hour",
          { num: "Value" },
          "Stamped",
          { num: "Attempts" },
          error ? "Stripe's error" : "Last note",
          "Identifier",
        ]}
      >
        {list.data.map((r) => (
          <tr
            data-testid="outbox-row"
            data-identifier={r.identifier}
            data-value={String(r.value)}
            data-state={r.state}
          >
            <td>
              <CustomerLink id={r.customer_id} />
            </td>
            <td>
              <Time t={r.hour} />
            </td>
            <td class="num">{humanBytes(r.value)}</td>
            <td>
              <Time t={r.timestamp} seconds />
              {r.late && <span class="badge">late</span>}
              {r.in_doubt && <span class="badge badge-warn">in doubt</span>}
            </td>
            <td class="num">{r.attempts}</td>
            <td class={error ? "" : "muted"}>{r.last_error ?? ""}</td>
            <td>
              <code class="mono">{r.identifier}</code>
            </td>
          </tr>
        ))}
      </Table>
      {list.has_more && (
        <p class="small muted">Newest 100 shown (GET /api/report/rows pages through all).</p>
      )}
    </div>
  );
}

export function BillingPage({ d }: { d: BillingData }): VNode {
  const s = d.status;
  const lastSent = d.lastSentAt ? Date.parse(d.lastSentAt) : -1;
  const last = Math.max(lastSent, d.lastRunAt ?? -1);
  const heldBytes = s.held.reduce((n, h) => n + h.bytes, 0);
  return (
    <>
      <h1>Billing sync</h1>
      <p class="muted small">
        The reporting outbox and what the next report pass would hold; the same document as{" "}
        <code>simmeter report --status --json</code> (held usage by{" "}
        {d.periodsSource === "stripe"
          ? "the periods looked up in Stripe now"
          : "the stored periods"}
        ).
      </p>
      <section class="figures">
        <Figure
          label="Last successful report"
          small
          note={
            last > 0 ? ago(d.now - last) : d.reporting ? "none on record" : "reporting disabled"
          }
        >
          {last > 0 ? <Time t={last} seconds /> : "—"}
        </Figure>
        <Figure
          label="Stopped rows"
          href="#stopped"
          warn={s.stopped.length > 0}
          note={humanBytes(s.stopped.reduce((n, r) => n + r.value, 0))}
        >
          <Count n={s.stopped.length} testid="billing-stopped-rows" />
        </Figure>
        <Figure
          label="Pending rows"
          href="#pending"
          note={
            <>
              <Bytes n={s.pending.bytes} testid="billing-pending-bytes" />
              {s.pending.oldest_created_at && (
                <>
                  {" "}
                  · oldest <Time t={s.pending.oldest_created_at} />
                </>
              )}
            </>
          }
        >
          <Count n={s.pending.rows} testid="billing-pending-rows" />
        </Figure>
        <Figure
          label="Held"
          href="#held"
          warn={heldBytes !== 0}
          note={`${s.held.length} customer(s)`}
        >
          <Bytes n={heldBytes} testid="billing-held-bytes" />
        </Figure>
        <Figure label="Late rows" href="#late" note="billed on a later invoice than their hour's">
          <Count n={d.late.data.length} testid="billing-late-rows" />
          {d.late.has_more && "+"}
        </Figure>
      </section>

      <h2>Outbox by state</h2>
      <Table
        testid="billing-states"
        small
        cols={["State", { num: "Rows" }, { num: "Value" }, { num: "Late" }]}
      >
        {s.states.map((x) => (
          <tr data-state={x.state} data-value={String(x.rows)}>
            <td>{x.state}</td>
            <td class="num">{x.rows}</td>
            <td class="num">{humanBytes(x.value)}</td>
            <td class="num">{x.late}</td>
          </tr>
        ))}
      </Table>

      <h2 id="stopped">Stopped rows</h2>
      <p class="small muted">
        A permanent Stripe error stopped these rows (and holds back their customer-hours). Fix the
        cause (the error says what), then retry: the rows go back in line and a report run starts.
      </p>
      <Rows list={d.stopped} testid="billing-stopped" error />
      {d.stopped.data.length > 0 && (
        <form method="get" action="/console/billing/retry">
          <button type="submit" data-testid="retry-failed">
            Retry stopped rows…
          </button>
        </form>
      )}

      <h2 id="held">Held usage</h2>
      <p class="small muted">
        Counted usage no invoice would carry yet; sent once the cause is fixed.
      </p>
      {s.held.length === 0 ? (
        <Empty>None.</Empty>
      ) : (
        <Table
          testid="billing-held"
          small
          cols={["Customer", "Reason", { num: "Bytes" }, "Detail"]}
        >
          {s.held.map((h) => (
            <tr data-customer={h.customer_id} data-reason={h.reason} data-value={String(h.bytes)}>
              <td>
                <CustomerLink id={h.customer_id} />
              </td>
              <td>
                <span class="badge badge-warn">{h.reason}</span>
              </td>
              <td class="num">{humanBytes(h.bytes)}</td>
              <td class="muted">{h.detail}</td>
            </tr>
          ))}
        </Table>
      )}

      <h2 id="pending">Pending rows</h2>
      <Rows list={d.pending} testid="billing-pending" />

      <h2 id="late">Late rows</h2>
      <p class="small muted">
        Usage whose own invoice had closed (or was older than Stripe's 35-day window) when it was
        planned: stamped into the customer's current period instead of being lost.
      </p>
      <Rows list={d.late} testid="billing-late" />
    </>
  );
}

export function RetryConfirmPage({
  stopped,
  csrf,
  reporterHere,
}: {
  stopped: List<OutboxRow>;
  csrf: string;
  reporterHere: boolean;
}): VNode {
  const bytes = stopped.data.reduce((n, r) => n + r.value, 0);
  return (
    <>
      <BackLink href="/console/billing" label="Billing sync" />
      <h1>Retry stopped rows?</h1>
      {stopped.data.length === 0 ? (
        <Empty>No row is stopped: nothing to retry.</Empty>
      ) : (
        <>
          <p>
            This puts{" "}
            <strong data-testid="confirm-retry-rows">
              {stopped.data.length}
              {stopped.has_more ? "+" : ""}
            </strong>{" "}
            stopped row(s) ({humanBytes(bytes)}) back in line, as{" "}
            <code>simmeter report --retry-failed</code> does
            {reporterHere
              ? ", and starts a report run now."
              : "; the reporter sends them on its next run."}{" "}
            Fix their cause first, or they stop again:
          </p>
          <Rows list={stopped} testid="confirm-retry" error />
        </>
      )}
      <ConfirmForm
        action="/console/billing/retry"
        csrf={csrf}
        cancel="/console/billing"
        disabled={stopped.data.length === 0}
        label={`Retry ${stopped.data.length} row(s)`}
      />
    </>
  );
}
