import type { VNode } from "preact";
import type { List } from "../../views/json.ts";
import type { OutboxRow } from "../../views/outbox.ts";
import type { ReportStatus } from "../../views/report.ts";
import { ago, Bytes, Count, CsrfField, customerHref, Empty, humanBytes, Time } from "../layout.tsx";

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
      <table class="striped small" data-testid={testid}>
        <thead>
          <tr>
            <th>Customer</th>
            <th>Hour</th>
            <th class="num">Value</th>
            <th>Stamped</th>
            <th class="num">Attempts</th>
            <th>{error ? "Stripe's error" : "Last note"}</th>
            <th>Identifier</th>
          </tr>
        </thead>
        <tbody>
          {list.data.map((r) => (
            <tr
              data-testid="outbox-row"
              data-identifier={r.identifier}
              data-value={String(r.value)}
              data-state={r.state}
            >
              <td>
                <a href={customerHref(r.customer_id)}>{r.customer_id}</a>
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
        </tbody>
      </table>
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
        <article>
          <span class="figure-label">Last successful report</span>
          <span class="figure-value small">{last > 0 ? <Time t={last} seconds /> : "—"}</span>
          <span class="figure-note">
            {last > 0 ? ago(d.now - last) : d.reporting ? "none on record" : "reporting disabled"}
          </span>
        </article>
        <article class={s.stopped.length ? "figure-warn" : undefined}>
          <a href="#stopped">
            <span class="figure-label">Stopped rows</span>
            <span class="figure-value">
              <Count n={s.stopped.length} testid="billing-stopped-rows" />
            </span>
            <span class="figure-note">
              {humanBytes(s.stopped.reduce((n, r) => n + r.value, 0))}
            </span>
          </a>
        </article>
        <article>
          <a href="#pending">
            <span class="figure-label">Pending rows</span>
            <span class="figure-value">
              <Count n={s.pending.rows} testid="billing-pending-rows" />
            </span>
            <span class="figure-note">
              <Bytes n={s.pending.bytes} testid="billing-pending-bytes" />
              {s.pending.oldest_created_at && (
                <>
                  {" "}
                  · oldest <Time t={s.pending.oldest_created_at} />
                </>
              )}
            </span>
          </a>
        </article>
        <article class={heldBytes ? "figure-warn" : undefined}>
          <a href="#held">
            <span class="figure-label">Held</span>
            <span class="figure-value">
              <Bytes n={heldBytes} testid="billing-held-bytes" />
            </span>
            <span class="figure-note">{s.held.length} customer(s)</span>
          </a>
        </article>
        <article>
          <a href="#late">
            <span class="figure-label">Late rows</span>
            <span class="figure-value">
              <Count n={d.late.data.length} testid="billing-late-rows" />
              {d.late.has_more && "+"}
            </span>
            <span class="figure-note">billed on a later invoice than their hour's</span>
          </a>
        </article>
      </section>

      <h2>Outbox by state</h2>
      <table class="striped small" data-testid="billing-states">
        <thead>
          <tr>
            <th>State</th>
            <th class="num">Rows</th>
            <th class="num">Value</th>
            <th class="num">Late</th>
          </tr>
        </thead>
        <tbody>
          {s.states.map((x) => (
            <tr data-state={x.state} data-value={String(x.rows)}>
              <td>{x.state}</td>
              <td class="num">{x.rows}</td>
              <td class="num">{humanBytes(x.value)}</td>
              <td class="num">{x.late}</td>
            </tr>
          ))}
        </tbody>
      </table>

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
        <table class="striped small" data-testid="billing-held">
          <thead>
            <tr>
              <th>Customer</th>
              <th>Reason</th>
              <th class="num">Bytes</th>
              <th>Detail</th>
            </tr>
          </thead>
          <tbody>
            {s.held.map((h) => (
              <tr data-customer={h.customer_id} data-reason={h.reason} data-value={String(h.bytes)}>
                <td>
                  <a href={customerHref(h.customer_id)}>{h.customer_id}</a>
                </td>
                <td>
                  <span class="badge badge-warn">{h.reason}</span>
                </td>
                <td class="num">{humanBytes(h.bytes)}</td>
                <td class="muted">{h.detail}</td>
              </tr>
            ))}
          </tbody>
        </table>
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
      <p class="small">
        <a href="/console/billing">← Billing sync</a>
      </p>
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
      <form method="post" action="/console/billing/retry" class="actions">
        <CsrfField token={csrf} />
        <button type="submit" data-testid="confirm" disabled={stopped.data.length === 0}>
          Retry {stopped.data.length} row(s)
        </button>
        <a href="/console/billing" class="secondary">
          Cancel
        </a>
      </form>
    </>
  );
}
