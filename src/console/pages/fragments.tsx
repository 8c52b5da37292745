// Page fragments more than one page shows: tables, links back and to the next page of a list,
// periods, the assign form, the confirm-or-cancel form of an action, the usage chart and table.
import type { ComponentChildren, VNode } from "preact";
import type { List } from "../../views/json.ts";
import type { UsageSeries } from "../../views/series.ts";
import { CsrfField, customerHref, humanBytes, simHref, Time } from "../layout.tsx";

/** A column heading: text (or any markup), or `{ num }` for a right-aligned number column. */
export type Column = ComponentChildren | { num: string };

const isNum = (c: Column): c is { num: string } =>
  typeof c === "object" && c !== null && "num" in c;

/** A striped table (optionally small, inside a scrolling wrapper), with its column headings. */
export function Table(props: {
  testid?: string;
  cols?: Column[];
  small?: boolean;
  wrap?: boolean;
  foot?: ComponentChildren;
  children: ComponentChildren;
}): VNode {
  const table = (
    <table class={props.small ? "striped small" : "striped"} data-testid={props.testid}>
      {props.cols && (
        <thead>
          <tr>{props.cols.map((c) => (isNum(c) ? <th class="num">{c.num}</th> : <th>{c}</th>))}</tr>
        </thead>
      )}
      <tbody>{props.children}</tbody>
      {props.foot}
    </table>
  );
  return props.wrap ? <div class="table-wrap">{table}</div> : table;
}

/** An anomaly's when, kind and detail: three cells of its row. */
export function AnomalyCells({
  a,
}: {
  a: { detected_at: string | number; kind: string; detail: string };
}): VNode {
  return (
    <>
      <td>
        <Time t={a.detected_at} seconds />
      </td>
      <td>
        <span class="badge badge-warn">{a.kind}</span>
      </td>
      <td>{a.detail}</td>
    </>
  );
}

/** "← Customers", above a detail or confirmation page. */
export function BackLink({ href, label }: { href: string; label: string }): VNode {
  return (
    <p class="small">
      <a href={href}>← {label}</a>
    </p>
  );
}

/** The link to a list's next page, when it has one; `href` gets the cursor. */
export function MoreLink<T>({
  list,
  href,
  label,
}: {
  list: List<T>;
  href: (after: string) => string;
  label: string;
}): VNode | null {
  if (!list.has_more) return null;
  return (
    <p>
      <a href={href(list.next_starting_after ?? "")}>{label}</a>
    </p>
  );
}

/** A query string of the values given ("" when none is). */
export const qs = (o: Record<string, string | undefined>) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
};

/** A SIM's columns, as the statement and the customer's SIMs list them. */
export const SIM_COLUMNS = ["SIM", "ICCID", "Name", "Fleet"];

/** `?starting_after=…` of a list's next page */
export const after = (path: string) => (cursor: string) =>
  `${path}?starting_after=${encodeURIComponent(cursor)}`;

/** start → end, in UTC */
export function Period({
  start,
  end,
}: {
  start: string | number | null;
  end: string | number | null;
}): VNode {
  return (
    <>
      <Time t={start} /> → <Time t={end} />
    </>
  );
}

/** An empty value in a table or figure */
export function Dash(): VNode {
  return <span class="muted">—</span>;
}

/** The exact integer a test reads, next to a figure that shows another. */
export function HiddenValue({ testid, value }: { testid: string; value: number }): VNode {
  return <span hidden data-testid={testid} data-value={String(value)} />;
}

export function CustomerLink({ id }: { id: string }): VNode {
  return <a href={customerHref(id)}>{id}</a>;
}

/** A SIM's whole SID, linking to its page. */
export function SimLink({ sim, testid }: { sim: string; testid?: string }): VNode {
  return (
    <a href={simHref(sim)} data-testid={testid}>
      <code class="mono">{sim}</code>
    </a>
  );
}

/** The customers the assign form offers (its input's list). */
export function KnownCustomers({ customers }: { customers: string[] }): VNode {
  return (
    <datalist id="known-customers">
      {customers.map((c) => (
        <option value={c} />
      ))}
    </datalist>
  );
}

/** Assign a SIM to a customer: leads to the confirmation page (GET /console/assign). */
export function AssignSimForm(props: {
  sim: string;
  testid: string;
  fromHint: string;
  children?: ComponentChildren;
}): VNode {
  return (
    <form method="get" action="/console/assign" class="inline" data-testid={props.testid}>
      <input type="hidden" name="target_type" value="sim" />
      <input type="hidden" name="target_id" value={props.sim} />
      <input
        name="customer"
        placeholder="cus_…"
        list="known-customers"
        required
        aria-label="customer"
      />
      <input name="from" placeholder={props.fromHint} aria-label="effective from" />
      <button type="submit">Review…</button>
      {props.children}
    </form>
  );
}

/** An action's confirmation: its POST (with the CSRF token and `children` as its fields) or Cancel. */
export function ConfirmForm(props: {
  action: string;
  csrf: string;
  cancel: string;
  disabled: boolean;
  label: string;
  buttonClass?: string | undefined;
  children?: ComponentChildren;
}): VNode {
  return (
    <form method="post" action={props.action} class="actions">
      <CsrfField token={props.csrf} />
      {props.children}
      <button
        type="submit"
        data-testid="confirm"
        disabled={props.disabled}
        class={props.buttonClass}
      >
        {props.label}
      </button>
      <a href={props.cancel} class="secondary">
        Cancel
      </a>
    </form>
  );
}

/** A usage series as a table (per hour or day), folded under the chart. */
export function UsageTable({ series, testid }: { series: UsageSeries; testid: string }): VNode {
  return (
    <details>
      <summary class="small">Table</summary>
      <Table
        testid={testid}
        wrap
        cols={[
          series.granularity === "hour" ? "Hour (UTC)" : "Day (UTC)",
          { num: "Bytes" },
          { num: "Exact" },
        ]}
      >
        {series.points.map((p) => (
          <tr data-period={p.period} data-value={String(p.bytes)}>
            <td>{p.period}</td>
            <td class="num">{humanBytes(p.bytes)}</td>
            <td class="num">{p.bytes.toLocaleString("en-US")}</td>
          </tr>
        ))}
      </Table>
    </details>
  );
}

export function usageChartSpec(series: UsageSeries) {
  return {
    type: "bar" as const,
    unit: "bytes" as const,
    labels: series.points.map((p) =>
      series.granularity === "hour" ? p.period.slice(5, 16).replace("T", " ") : p.period,
    ),
    datasets: [{ label: "bytes counted", data: series.points.map((p) => p.bytes) }],
  };
}
