import type { VNode } from "preact";
import type { RequeueItem } from "../../ingest/requeue.ts";
import type { List } from "../../views/json.ts";
import type { QuarantineItem } from "../../views/quarantine.ts";
import { Count, Empty, Sid, Time } from "../layout.tsx";
import { BackLink, ConfirmForm, Dash, MoreLink, qs, Table } from "./fragments.tsx";

/** The raw event, pretty-printed when it is JSON (else as received). */
export function pretty(raw: string): string {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw;
  }
}

function RawEvent({ raw, testid }: { raw: string; testid?: string }): VNode {
  return (
    <pre data-testid={testid}>
      <code>{pretty(raw)}</code>
    </pre>
  );
}

export type QuarantineFilters = { reason: string; since: string };

function Status({ q }: { q: QuarantineItem }): VNode {
  return (
    <>
      {q.counted === true && <span class="badge badge-ok">counted since</span>}
      {q.counted === false && <span class="badge badge-warn">not counted</span>}
      {q.requeues > 0 && (
        <span class="badge" title={q.requeued_at ?? ""}>
          requeued {q.requeues}×
        </span>
      )}
      {q.requeue_of !== null && <span class="badge">requeue of #{q.requeue_of}</span>}
      {q.quarantined_again_as.length > 0 && (
        <span class="badge badge-warn">again as #{q.quarantined_again_as.join(", #")}</span>
      )}
    </>
  );
}

export function QuarantinePage({
  list,
  filters,
  total,
}: {
  list: List<QuarantineItem>;
  filters: QuarantineFilters;
  total: number;
}): VNode {
  const filtered = Boolean(filters.reason || filters.since);
  return (
    <>
      <h1>Quarantine</h1>
      <p class="muted small">
        Authenticated events that could not be counted, newest first, with the reason and the raw
        event; the same list as <code>simmeter quarantine --json</code>. Requeue them once the cause
        is fixed (it is idempotent: an event already counted is a duplicate).
      </p>
      <form
        method="get"
        action="/console/quarantine"
        class="filters"
        data-testid="quarantine-filter"
      >
        <label>
          Reason contains
          <input name="reason" value={filters.reason} placeholder="e.g. retention" />
        </label>
        <label>
          Received since (UTC)
          <input name="since" value={filters.since} placeholder="2026-11-01T10:00" />
        </label>
        <button type="submit" class="secondary">
          Filter
        </button>
        {filtered && (
          <a href="/console/quarantine" class="small">
            clear
          </a>
        )}
      </form>
      <p class="small">
        <Count n={list.data.length} testid="quarantine-shown" /> shown of{" "}
        <Count n={total} testid="quarantine-total" /> row(s) in quarantine
        {filtered && (
          <>
            {" "}
            ·{" "}
            <a
              href={`/console/quarantine/requeue${qs({ reason: filters.reason, since: filters.since })}`}
              data-testid="requeue-matching"
            >
              Requeue every event matching this filter…
            </a>
          </>
        )}
      </p>
      {list.data.length === 0 ? (
        <Empty>{filtered ? "No quarantined event matches." : "The quarantine is empty."}</Empty>
      ) : (
        <form method="get" action="/console/quarantine/requeue">
          <div class="table-wrap">
            <Table
              testid="quarantine"
              small
              cols={[
                <input type="checkbox" data-select-all="id" aria-label="select all" />,
                { num: "#" },
                "Received",
                "Source",
                "Event",
                "Reason",
                "Status",
              ]}
            >
              {list.data.map((q) => (
                <tr data-testid="quarantine-row" data-id={String(q.id)}>
                  <td>
                    <input
                      type="checkbox"
                      name="id"
                      value={String(q.id)}
                      aria-label={`select #${q.id}`}
                    />
                  </td>
                  <td class="num">
                    <a href={`/console/quarantine/${q.id}`}>{q.id}</a>
                  </td>
                  <td>
                    <Time t={q.received_at} seconds />
                  </td>
                  <td>{q.source}</td>
                  <td>{q.event_sid ? <Sid id={q.event_sid} /> : <Dash />}</td>
                  <td data-field="reason">
                    {q.reason}
                    <details class="raw">
                      <summary>raw event</summary>
                      <RawEvent raw={q.raw} />
                    </details>
                  </td>
                  <td>
                    <Status q={q} />
                  </td>
                </tr>
              ))}
            </Table>
          </div>
          <button type="submit" data-testid="requeue-selected">
            Requeue selected…
          </button>
        </form>
      )}
      <MoreLink
        list={list}
        href={(cursor) => `/console/quarantine${qs({ ...filters, starting_after: cursor })}`}
        label="Older →"
      />
    </>
  );
}

export function QuarantineItemPage({ q }: { q: QuarantineItem }): VNode {
  return (
    <>
      <BackLink href="/console/quarantine" label="Quarantine" />
      <h1>Quarantined event #{q.id}</h1>
      <table class="small">
        <tbody>
          <tr>
            <th>Received</th>
            <td>
              <Time t={q.received_at} seconds />
            </td>
          </tr>
          <tr>
            <th>Source</th>
            <td>{q.source}</td>
          </tr>
          <tr>
            <th>Delivery</th>
            <td>
              <code>{q.delivery_id}</code> position {q.position}
            </td>
          </tr>
          <tr>
            <th>Event</th>
            <td>
              <code>{q.event_sid ?? "—"}</code>
            </td>
          </tr>
          <tr>
            <th>Reason</th>
            <td data-testid="quarantine-reason">{q.reason}</td>
          </tr>
          <tr>
            <th>Status</th>
            <td>
              <Status q={q} />
            </td>
          </tr>
        </tbody>
      </table>
      <form method="get" action="/console/quarantine/requeue">
        <input type="hidden" name="id" value={String(q.id)} />
        <button type="submit" data-testid="requeue-one">
          Requeue…
        </button>
      </form>
      <h2>Raw event</h2>
      <RawEvent raw={q.raw} testid="quarantine-raw" />
    </>
  );
}

export function RequeueConfirmPage({
  items,
  selection,
  csrf,
  workerRunning,
  error,
}: {
  items: RequeueItem[];
  selection: { ids: number[]; reason: string; since: string };
  csrf: string;
  workerRunning: boolean | null;
  error: string | null;
}): VNode {
  return (
    <>
      <BackLink href="/console/quarantine" label="Quarantine" />
      <h1>Requeue quarantined events?</h1>
      {error ? (
        <p class="flash flash-error">{error}</p>
      ) : items.length === 0 ? (
        <Empty>No quarantined event matches: nothing to requeue.</Empty>
      ) : (
        <>
          <p>
            This puts <strong data-testid="confirm-requeue-events">{items.length}</strong> event(s)
            back on the ingest queue, as <code>simmeter quarantine requeue</code> does, and waits up
            to 20 s for the worker to say what became of each (counted, duplicate, or quarantined
            again with the new reason).
            {workerRunning === false && (
              <strong> No ingest worker is running: they will wait in the queue.</strong>
            )}
          </p>
          <Table
            testid="confirm-requeue"
            small
            cols={[{ num: "#" }, "Rows", "Event", "Already counted", "Reason"]}
          >
            {items.map((it) => (
              <tr data-id={String(it.id)}>
                <td class="num">{it.id}</td>
                <td>{it.rowIds.join(", ")}</td>
                <td>{it.eventSid ? <Sid id={it.eventSid} /> : "—"}</td>
                <td>{it.eventSid === null ? "" : it.counted ? "yes" : "no"}</td>
                <td>{it.reason}</td>
              </tr>
            ))}
          </Table>
        </>
      )}
      <ConfirmForm
        action="/console/quarantine/requeue"
        csrf={csrf}
        cancel="/console/quarantine"
        disabled={items.length === 0 || Boolean(error)}
        label={`Requeue ${items.length} event(s)`}
      >
        {selection.ids.map((id) => (
          <input type="hidden" name="id" value={String(id)} />
        ))}
        {selection.reason && <input type="hidden" name="reason" value={selection.reason} />}
        {selection.since && <input type="hidden" name="since" value={selection.since} />}
      </ConfirmForm>
    </>
  );
}
