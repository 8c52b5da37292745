import type { VNode } from "preact";
import { describeMoves, type Move } from "../../customers/customers.ts";
import type { List } from "../../views/json.ts";
import type { UnmappedItem } from "../../views/usage.ts";
import {
  Bytes,
  CsrfField,
  customerHref,
  Empty,
  humanBytes,
  Sid,
  simHref,
  Time,
} from "../layout.tsx";

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
          <table class="striped small" data-testid="unmapped">
            <thead>
              <tr>
                <th>SIM</th>
                <th>ICCID</th>
                <th>Fleet</th>
                <th class="num">Bytes</th>
                <th>Hours</th>
                <th>Assign to</th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((u) => (
                <tr data-testid="unmapped-row" data-sim={u.sim_sid} data-value={String(u.bytes)}>
                  <td>
                    <a href={simHref(u.sim_sid)}>
                      <code class="mono">{u.sim_sid}</code>
                    </a>
                  </td>
                  <td class="mono">{u.iccid}</td>
                  <td>{u.fleet_sid ? <Sid id={u.fleet_sid} /> : "—"}</td>
                  <td class="num">{humanBytes(u.bytes)}</td>
                  <td>
                    <Time t={u.first_hour} /> → <Time t={u.last_hour} />
                  </td>
                  <td>
                    <form
                      method="get"
                      action="/console/assign"
                      class="inline"
                      data-testid="assign-form"
                    >
                      <input type="hidden" name="target_type" value="sim" />
                      <input type="hidden" name="target_id" value={u.sim_sid} />
                      <input
                        name="customer"
                        placeholder="cus_…"
                        list="known-customers"
                        required
                        aria-label="customer"
                      />
                      <input
                        name="from"
                        placeholder="from (default now)"
                        aria-label="effective from"
                      />
                      <button type="submit">Review…</button>
                    </form>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <datalist id="known-customers">
            {customers.map((c) => (
              <option value={c} />
            ))}
          </datalist>
        </div>
      )}
      {list.has_more && (
        <p>
          <a
            href={`/console/unmapped?starting_after=${encodeURIComponent(list.next_starting_after ?? "")}`}
          >
            Next page →
          </a>
        </p>
      )}
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
      <p class="small">
        <a href="/console/unmapped">← Unmapped SIMs</a>
      </p>
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
      <form method="post" action="/console/assign" class="actions">
        <CsrfField token={csrf} />
        <input type="hidden" name="target_type" value={d.targetType} />
        <input type="hidden" name="target_id" value={d.targetId} />
        <input type="hidden" name="customer" value={d.customer} />
        <input type="hidden" name="from" value={d.from} />
        {rebill && <input type="hidden" name="rebill" value="1" />}
        <button
          type="submit"
          data-testid="confirm"
          disabled={Boolean(d.problem)}
          class={rebill ? "contrast" : undefined}
        >
          {rebill ? `Re-bill ${humanBytes(moved)} and assign` : "Assign"}
        </button>
        <a href="/console/unmapped" class="secondary">
          Cancel
        </a>
      </form>
    </>
  );
}

export function LoginPage({
  next,
  error,
  signedIn,
}: {
  next: string;
  error: string | null;
  signedIn: boolean;
}): VNode {
  return (
    <article>
      <h1>Sign in to the simmeter console</h1>
      {signedIn && (
        <p>
          You are signed in. <a href={next}>Continue →</a>
        </p>
      )}
      {error && (
        <p class="flash flash-error" role="alert" data-testid="login-error">
          {error}
        </p>
      )}
      <form method="post" action="/console/login">
        <input type="hidden" name="next" value={next} />
        <label>
          ADMIN_TOKEN
          <input type="password" name="token" autocomplete="current-password" required autofocus />
        </label>
        <button type="submit" data-testid="login">
          Sign in
        </button>
      </form>
      <p class="small muted">
        Paste the admin listener's ADMIN_TOKEN. The browser keeps a session cookie (HttpOnly,
        SameSite=Strict, Secure over HTTPS) for 12 hours; the token itself is never stored.
      </p>
    </article>
  );
}

export function MessagePage({
  title,
  message,
  back,
}: {
  title: string;
  message: string;
  back?: string;
}): VNode {
  return (
    <>
      <h1>{title}</h1>
      <p data-testid="message">{message}</p>
      {back && (
        <p>
          <a href={back}>← Back</a>
        </p>
      )}
    </>
  );
}
