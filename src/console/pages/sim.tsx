import type { VNode } from "preact";
import type { SimDetail } from "../../views/sim.ts";
import { Bytes, Chart, type ChartSpec, Empty, Figure, humanBytes, Sid, Time } from "../layout.tsx";
import {
  AnomalyCells,
  AssignSimForm,
  BackLink,
  CustomerLink,
  KnownCustomers,
  Period,
  Table,
} from "./fragments.tsx";

function timelineSpec(s: SimDetail): ChartSpec {
  // One line per session: its readings' cumulative totals over time (window sums for schema v1).
  return {
    type: "line",
    x: "time",
    unit: "bytes",
    datasets: [...s.sessions].reverse().map((x) => {
      let sum = 0;
      return {
        label: x.session_sid.slice(0, 10),
        data: x.readings.map((r) => {
          sum += r.window_bytes ?? 0;
          return { x: Date.parse(r.t), y: r.cumulative ?? sum };
        }),
      };
    }),
  };
}

export function SimPage({ s, customers }: { s: SimDetail; customers: string[] }): VNode {
  const unmapped = s.customers.find((c) => c.customer_id === null);
  const hoursAsc = [...s.hours].reverse();
  return (
    <>
      <BackLink href="/console/customers" label="Customers" />
      <h1>
        SIM <code data-testid="sim-sid">{s.sim_sid}</code>
      </h1>
      <p class="small">
        ICCID <code>{s.iccid ?? "—"}</code> · name {s.unique_name ?? "—"} · fleet{" "}
        {s.fleet_sid ? <Sid id={s.fleet_sid} /> : "—"} · first recorded <Time t={s.first_seen_at} />{" "}
        · last reading <Time t={s.last_reading_at} />
      </p>
      <section class="figures">
        <Figure label="Bytes, all time">
          <Bytes n={s.bytes} testid="sim-bytes" />
        </Figure>
        {s.customers.map((c) => (
          <article
            data-testid="sim-customer"
            data-customer={c.customer_id ?? ""}
            data-value={String(c.bytes)}
          >
            <span class="figure-label">{c.customer_id ? "billed to" : "unmapped"}</span>
            <span class="figure-value">{humanBytes(c.bytes)}</span>
            <span class="figure-note">
              {c.customer_id ? (
                <CustomerLink id={c.customer_id} />
              ) : (
                "no assignment covers these hours"
              )}
              <br />
              <Period start={c.first_hour} end={c.last_hour} />
            </span>
          </article>
        ))}
        <article>
          <span class="figure-label">Sessions</span>
          <span
            class="figure-value"
            data-testid="sim-sessions-total"
            data-value={String(s.sessions_total)}
          >
            {s.sessions_total}
          </span>
          <span class="figure-note">{s.anomalies.length} anomalies</span>
        </article>
      </section>

      <details open={Boolean(unmapped)}>
        <summary>Assign this SIM to a customer</summary>
        <AssignSimForm sim={s.sim_sid} testid="sim-assign-form" fromHint="from (ISO, default now)">
          <KnownCustomers customers={customers} />
        </AssignSimForm>
        <p class="small muted">
          The next page shows what would change (usage moving from another customer needs an
          explicit re-bill) before anything is recorded.
        </p>
      </details>

      <h2>Sessions and readings</h2>
      {s.sessions.length === 0 ? (
        <Empty>No session with readings (sessions are pruned after RETENTION_DAYS).</Empty>
      ) : (
        <>
          <Chart
            id="chart-sim-timeline"
            spec={timelineSpec(s)}
            label="cumulative bytes of each session over time"
          />
          <p class="small muted">
            Each line is a session; each point a reading (its cumulative total). Showing the newest{" "}
            {s.sessions.length} of {s.sessions_total}.
          </p>
          <div class="table-wrap">
            <Table
              testid="sim-sessions"
              cols={["Session", "Start", "End", { num: "Bytes" }, { num: "Readings" }, "Basis"]}
            >
              {s.sessions.map((x) => (
                <>
                  <tr
                    data-testid="sim-session"
                    data-session={x.session_sid}
                    data-value={String(x.total_bytes)}
                  >
                    <td>
                      <Sid id={x.session_sid} />
                    </td>
                    <td class="small">
                      <Time t={x.start_time} seconds />
                    </td>
                    <td class="small">
                      {x.end_time ? (
                        <Time t={x.end_time} seconds />
                      ) : (
                        <span class="badge">open</span>
                      )}
                    </td>
                    <td class="num">{humanBytes(x.total_bytes)}</td>
                    <td class="num">{x.reading_count}</td>
                    <td class="small">{x.basis}</td>
                  </tr>
                  <tr>
                    <td colSpan={6}>
                      <details class="raw">
                        <summary>
                          {x.readings.length} readings, {x.hours.length} hour(s):{" "}
                          {x.hours
                            .map((h) => `${h.hour.slice(11, 16)} ${humanBytes(h.bytes)}`)
                            .join(" · ")}
                        </summary>
                        <table class="small">
                          <thead>
                            <tr>
                              <th>Time</th>
                              <th class="num">Cumulative</th>
                              <th class="num">Window</th>
                              <th>Received</th>
                              <th>Event</th>
                            </tr>
                          </thead>
                          <tbody>
                            {x.readings.map((r) => (
                              <tr data-testid="reading">
                                <td>
                                  <Time t={r.t} seconds />
                                  {r.ended && <span class="badge">ended</span>}
                                </td>
                                <td class="num">
                                  {r.cumulative === null
                                    ? "—"
                                    : r.cumulative.toLocaleString("en-US")}
                                </td>
                                <td class="num">
                                  {r.window_bytes === null
                                    ? "—"
                                    : r.window_bytes.toLocaleString("en-US")}
                                </td>
                                <td>
                                  <Time t={r.received_at} seconds />
                                </td>
                                <td>
                                  <Sid id={r.event_sid} />
                                </td>
                              </tr>
                            ))}
                          </tbody>
                        </table>
                      </details>
                    </td>
                  </tr>
                </>
              ))}
            </Table>
          </div>
        </>
      )}

      <h2>Usage per hour</h2>
      {hoursAsc.length === 0 ? (
        <Empty>No usage counted.</Empty>
      ) : (
        <>
          <Chart
            id="chart-sim-hours"
            spec={{
              type: "bar",
              unit: "bytes",
              labels: hoursAsc.map((h) => h.hour.slice(5, 16).replace("T", " ")),
              datasets: [{ label: "bytes", data: hoursAsc.map((h) => h.bytes) }],
            }}
            label="bytes per hour"
          />
          <details>
            <summary class="small">Table (hour, bytes, billed to)</summary>
            <Table testid="sim-hours" small>
              {s.hours.map((h) => (
                <tr
                  data-hour={h.hour}
                  data-value={String(h.bytes)}
                  data-customer={h.customer_id ?? ""}
                >
                  <td>
                    <Time t={h.hour} />
                  </td>
                  <td class="num">{h.bytes.toLocaleString("en-US")}</td>
                  <td>{h.customer_id ?? <span class="badge badge-warn">unmapped</span>}</td>
                </tr>
              ))}
            </Table>
          </details>
        </>
      )}

      <h2>Anomalies</h2>
      {s.anomalies.length === 0 ? (
        <Empty>None.</Empty>
      ) : (
        <Table testid="sim-anomalies" small cols={["Detected", "Kind", "Detail", "Session"]}>
          {s.anomalies.map((a) => (
            <tr>
              <AnomalyCells a={a} />
              <td>
                <Sid id={a.session_sid} />
              </td>
            </tr>
          ))}
        </Table>
      )}

      <h2>Customer history</h2>
      <p class="small muted">
        An hour's customer is the SIM's own assignment in effect then, else that of the fleet it was
        in then (docs/adr/0005-customer-history.md).
      </p>
      <div class="grid-2">
        <section>
          <h3>Own assignments (SIM SID, ICCID)</h3>
          {s.history.assignments.length === 0 ? (
            <Empty>None.</Empty>
          ) : (
            <Table testid="sim-assignments" small>
              {s.history.assignments.map((a) => (
                <tr data-id={String(a.id)}>
                  <td>
                    <Time t={a.effective_from} />
                  </td>
                  <td>{a.target_type}</td>
                  <td>
                    <CustomerLink id={a.customer_id} />
                  </td>
                </tr>
              ))}
            </Table>
          )}
        </section>
        <section>
          <h3>Fleets (moves)</h3>
          {s.history.fleets.length === 0 ? (
            <Empty>No fleet in its events.</Empty>
          ) : (
            <Table testid="sim-fleets" small>
              {s.history.fleets.map((f) => (
                <tr>
                  <td>
                    <Sid id={f.fleet_sid} />
                  </td>
                  <td>
                    <Period start={f.first_hour} end={f.last_hour} />
                  </td>
                </tr>
              ))}
            </Table>
          )}
          <h3>Those fleets' assignments</h3>
          {s.history.fleet_assignments.length === 0 ? (
            <Empty>None.</Empty>
          ) : (
            <Table small>
              {s.history.fleet_assignments.map((a) => (
                <tr>
                  <td>
                    <Time t={a.effective_from} />
                  </td>
                  <td>
                    <Sid id={a.target_id} />
                  </td>
                  <td>
                    <CustomerLink id={a.customer_id} />
                  </td>
                </tr>
              ))}
            </Table>
          )}
        </section>
      </div>
    </>
  );
}
