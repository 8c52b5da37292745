import type { VNode } from "preact";
import { describeMoves, type Move } from "../../customers/customers.ts";
import type { List } from "../../views/json.ts";
import type { UnmappedItem } from "../../views/usage.ts";
import { Bytes, customerHref, Empty, humanBytes, Sid, Time } from "../layout.tsx";
import {
  AssignSimForm,
  after,
  BackLink,
  ConfirmForm,
  KnownCustomers,
  MoreLink,
  Period,
  SimLink,
  Table,
} from "./fragments.tsx";

export function UnmappedPage({
  list,
  customers,
}: {
  list: List<UnmappedItem>;
  customers: string[];
}): VNode {
  const total = list.data.reduce((n, u) => n + u.bytes, 0);
  return (
    <>
      <h1>Unmapped SIMs</h1>
      <p class="muted small">
        SIMs with counted usage that no customer assignment covers: kept, and reported as soon as an
        assignment covers them. The same list as <code>simmeter usage --unmapped --json</code>.
      </p>
      <p>
        <Bytes n={total} testid="unmapped-total" /> in {list.data.length} SIM(s).
      </p>
      {list.data.length === 0 ? (
        <Empty>Every SIM with usage is mapped to a customer.</Empty>
      ) : (
        <div class="table-wrap">
          <Table
            testid="unmapped"
            small
            cols={["SIM", "ICCID", "Fleet", { num: "Bytes" }, "Hours", "Assign to"]}
          >
            {list.data.map((u) => (
              <tr data-testid="unmapped-row" data-sim={u.sim_sid} data-value={String(u.bytes)}>
                <td>
                  <SimLink sim={u.sim_sid} />
                </td>
                <td class="mono">{u.iccid}</td>
                <td>{u.fleet_sid ? <Sid id={u.fleet_sid} /> : "—"}</td>
                <td class="num">{humanBytes(u.bytes)}</td>
                <td>
                  <Period start={u.first_hour} end={u.last_hour} />
                </td>
                <td>
                  <AssignSimForm
                    sim={u.sim_sid}
                    testid="assign-form"
                    fromHint="from (default now)"
                  />
                </td>
              </tr>
            ))}
          </Table>
          <KnownCustomers customers={customers} />
        </div>
      )}
      <MoreLink list={list} href={after("/console/unmapped")} label="Next page →" />
    </>
  );
}

export type AssignConfirmData = {
  targetType: "sim" | "iccid" | "fleet";
  targetId: string;
  customer: string;
  from: string;
  effectiveHour: string | null;
  problem: string | null;
  moves: Move[];
  /** the target's unmapped bytes this assignment would start billing */
  unmappedBytes: number;
};

export function AssignConfirmPage({ d, csrf }: { d: AssignConfirmData; csrf: string }): VNode {
  const rebill = d.moves.length > 0;
  const moved = d.moves.reduce((n, m) => n + m.bytes, 0);
  return (
    <>
      <BackLink href="/console/unmapped" label="Unmapped SIMs" />
      <h1>{rebill ? "Re-bill and assign?" : "Assign?"}</h1>
      {d.problem ? (
        <p class="flash flash-error" data-testid="assign-problem">
          {d.problem}
        </p>
      ) : (
        <>
          <p>
            Assign {d.targetType} <code>{d.targetId}</code> to{" "}
            <a href={customerHref(d.customer)}>
              <code>{d.customer}</code>
            </a>{" "}
            from {d.effectiveHour ? <Time t={d.effectiveHour} /> : "now"} (the first whole UTC hour
            at or after the time), as{" "}
            <code>
              simmeter customers assign --{d.targetType} {d.targetId} --customer {d.customer}
              {d.from ? ` --from ${d.from}` : ""}
              {rebill ? " --rebill" : ""}
            </code>
            .
          </p>
          {d.unmappedBytes > 0 && (
            <p>
              Its unmapped usage, <Bytes n={d.unmappedBytes} testid="assign-unmapped-bytes" />,
              becomes billable to {d.customer} (the reporter sends it on its next run).
            </p>
          )}
          {rebill && (
            <>
              <p class="flash flash-error" data-testid="rebill-required">
                This moves <strong>{humanBytes(moved)}</strong> in {d.moves.length} SIM-hour(s)
                already attributed to another customer. Applying it re-bills that usage: the
                reporter sends the old customer a negative correction and the new one the bytes.
              </p>
              <ul class="small" data-testid="moves">
                {describeMoves(d.moves).map((l) => (
                  <li>{l}</li>
                ))}
              </ul>
            </>
          )}
        </>
      )}
      <ConfirmForm
        action="/console/assign"
        csrf={csrf}
        cancel="/console/unmapped"
        disabled={Boolean(d.problem)}
        label={rebill ? `Re-bill ${humanBytes(moved)} and assign` : "Assign"}
        buttonClass={rebill ? "contrast" : undefined}
      >
        <input type="hidden" name="target_type" value={d.targetType} />
        <input type="hidden" name="target_id" value={d.targetId} />
        <input type="hidden" name="customer" value={d.customer} />
        <input type="hidden" name="from" value={d.from} />
        {rebill && <input type="hidden" name="rebill" value="1" />}
      </ConfirmForm>
    </>
  );
}
