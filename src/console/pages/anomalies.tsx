// Anomalies: readings that did not add up, by kind, linked to their SIM.
import type { VNode } from "preact";
import type { List } from "../../views/json.ts";
import type { AnomalyItem } from "../../views/quarantine.ts";
import { Empty, Sid, simHref } from "../layout.tsx";
import { AnomalyCells, Dash, MoreLink, qs, Table } from "./fragments.tsx";

export function AnomaliesPage({
  list,
  kind,
  since,
  kinds,
  simOf,
}: {
  list: List<AnomalyItem>;
  kind: string;
  /** as typed (ISO 8601), "" for none */
  since: string;
  kinds: string[];
  simOf: Map<string, string>;
}): VNode {
  return (
    <>
      <h1>Anomalies</h1>
      <p class="muted small">
        Readings that did not add up, newest first: never fatal, the bytes are still counted by the
        rule of ADR 0001. The same list as <code>simmeter anomalies --json</code>.
      </p>
      <form method="get" action="/console/anomalies" class="filters">
        <label>
          Kind
          <select name="kind">
            <option value="">all</option>
            {kinds.map((k) => (
              <option value={k} selected={k === kind}>
                {k}
              </option>
            ))}
          </select>
        </label>
        <label>
          Detected since (UTC)
          <input name="since" value={since} placeholder="2026-11-01 or 2026-11-01T10:00" />
        </label>
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      {list.data.length === 0 ? (
        <Empty>
          No anomalies{kind ? ` of kind ${kind}` : ""}
          {since ? ` since ${since}` : ""}.
        </Empty>
      ) : (
        <Table
          testid="anomalies"
          small
          wrap
          cols={[{ num: "#" }, "Detected", "Kind", "Detail", "SIM", "Session", "Event"]}
        >
          {list.data.map((a) => {
            const sim = simOf.get(a.session_sid);
            return (
              <tr data-testid="anomaly-row" data-id={String(a.id)}>
                <td class="num">{a.id}</td>
                <AnomalyCells a={a} />
                <td>{sim ? <Sid id={sim} href={simHref(sim)} /> : <Dash />}</td>
                <td>
                  <Sid id={a.session_sid} />
                </td>
                <td>
                  <Sid id={a.event_sid} />
                </td>
              </tr>
            );
          })}
        </Table>
      )}
      <MoreLink
        list={list}
        href={(cursor) => `/console/anomalies${qs({ kind, starting_after: cursor })}`}
        label="Older →"
      />
    </>
  );
}
