// The console's page shell and the small components every page uses. Pages are rendered on the
// server (preact-render-to-string); figures carry data-testid and data-value (the exact integer),
// so a test or a script reads them without parsing the formatted text.
import type { ComponentChildren, VNode } from "preact";
import { renderToString } from "preact-render-to-string";
import { VERSION } from "../lib/version.ts";
import type { ConsoleAuth } from "./auth.ts";

export type Flash = { kind: "ok" | "error"; message: string; details?: string[] };

export type PageContext = {
  csrf: string;
  auth: ConsoleAuth;
  /** STRIPE_SECRET_KEY is set: previews, parity and statements can be shown */
  reporting: boolean;
  /** the current path, for the navigation's aria-current */
  path: string;
  flash: Flash | null;
  now: number;
};

const NAV: { href: string; label: string }[] = [
  { href: "/console", label: "Overview" },
  { href: "/console/customers", label: "Customers" },
  { href: "/console/billing", label: "Billing sync" },
  { href: "/console/quarantine", label: "Quarantine" },
  { href: "/console/anomalies", label: "Anomalies" },
  { href: "/console/unmapped", label: "Unmapped SIMs" },
  { href: "/console/queues", label: "Queues" },
];

const current = (path: string, href: string) =>
  href === "/console" ? path === "/console" || path === "/console/" : path.startsWith(href);

/** A whole page: doctype, Pico, the navigation, the flash message and the body. */
export function renderPage(ctx: PageContext, title: string, body: ComponentChildren): string {
  const signedIn = ctx.auth.kind === "session";
  const tree = (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        <title>{`${title} · simmeter`}</title>
        <link rel="stylesheet" href="/console/assets/pico.min.css" />
        <link rel="stylesheet" href="/console/assets/console.css" />
        <script src="/console/assets/chart.umd.min.js" defer />
        <script src="/console/assets/console.js" defer />
      </head>
      <body>
        <header>
          <nav>
            <ul>
              <li>
                <strong>simmeter</strong>
              </li>
              {NAV.map((n) => (
                <li>
                  <a href={n.href} aria-current={current(ctx.path, n.href) ? "page" : undefined}>
                    {n.label}
                  </a>
                </li>
              ))}
            </ul>
            <ul>
              {!ctx.reporting && (
                <li>
                  <span class="badge badge-warn" data-testid="reporting-disabled">
                    reporting disabled
                  </span>
                </li>
              )}
              {signedIn && (
                <li>
                  <form method="post" action="/console/logout" class="inline">
                    <CsrfField token={ctx.csrf} />
                    <button type="submit" class="secondary outline">
                      Sign out
                    </button>
                  </form>
                </li>
              )}
            </ul>
          </nav>
        </header>
        <main>
          {ctx.flash && <FlashBox flash={ctx.flash} />}
          {body}
        </main>
        <footer>
          simmeter {VERSION} · times are UTC · every figure here is also served by the admin API and
          printed by the CLI (docs/console.md)
        </footer>
      </body>
    </html>
  );
  return `<!doctype html>${renderToString(tree)}`;
}

export function FlashBox({ flash }: { flash: Flash }): VNode {
  return (
    <section
      class={`flash ${flash.kind === "error" ? "flash-error" : ""}`}
      role={flash.kind === "error" ? "alert" : "status"}
      data-testid="flash"
    >
      <strong>{flash.message}</strong>
      {flash.details && flash.details.length > 0 && (
        <ul class="small">
          {flash.details.map((d) => (
            <li>{d}</li>
          ))}
        </ul>
      )}
    </section>
  );
}

export function CsrfField({ token }: { token: string }): VNode {
  return <input type="hidden" name="_csrf" value={token} />;
}

const UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

/** 12345678 → "12.3 MB" (decimal units, as Stripe's dashboard shows quantities) */
export function humanBytes(n: number): string {
  let a = Math.abs(n);
  let i = 0;
  while (a >= 1000 && i < UNITS.length - 1) {
    a /= 1000;
    i++;
  }
  const s = i === 0 ? String(a) : a.toFixed(a < 10 ? 2 : a < 100 ? 1 : 0);
  return `${n < 0 ? "-" : ""}${s} ${UNITS[i]}`;
}

export const int = (n: number) => n.toLocaleString("en-US");

/** Bytes, human-readable, with the exact integer in data-value and the tooltip. */
export function Bytes({ n, testid }: { n: number; testid?: string }): VNode {
  return (
    <span data-testid={testid} data-value={String(n)} title={`${int(n)} bytes`}>
      {humanBytes(n)}
    </span>
  );
}

/** A count, with the exact integer in data-value. */
export function Count({ n, testid }: { n: number; testid?: string }): VNode {
  return (
    <span data-testid={testid} data-value={String(n)}>
      {int(n)}
    </span>
  );
}

/** An ISO time shown as "2026-11-01 10:00" UTC (seconds when they matter). */
export function Time({ t, seconds }: { t: string | number | null; seconds?: boolean }): VNode {
  if (t === null || t === "") return <span class="muted">—</span>;
  const d = new Date(t);
  const s = d.toISOString();
  return (
    <time datetime={s} title={s}>
      {s.slice(0, seconds ? 19 : 16).replace("T", " ")}
    </time>
  );
}

/** "3 min ago" */
export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172_800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} days ago`;
}

/** One headline figure: a label, the value, a note, linking to its detail. */
export function Figure(props: {
  label: string;
  href?: string;
  note?: ComponentChildren;
  warn?: boolean;
  /** a smaller value (a time, a word) */
  small?: boolean;
  children: ComponentChildren;
}): VNode {
  const inner = (
    <>
      <span class="figure-label">{props.label}</span>
      <span class={props.small ? "figure-value small" : "figure-value"}>{props.children}</span>
      {props.note !== undefined && <span class="figure-note">{props.note}</span>}
    </>
  );
  return (
    <article class={props.warn ? "figure-warn" : undefined}>
      {props.href ? <a href={props.href}>{inner}</a> : inner}
    </article>
  );
}

export type ChartSpec = {
  type: "bar" | "line";
  /** "time": x values are epoch ms in each point ({x, y}); otherwise labels */
  x?: "time";
  labels?: string[];
  unit: "bytes" | "ms" | "count";
  unit2?: "bytes" | "ms" | "count";
  stacked?: boolean;
  datasets: {
    label: string;
    data: (number | null | { x: number; y: number })[];
    yAxisID?: string;
    color?: "muted";
  }[];
};

/** A canvas Chart.js draws from the JSON next to it (console.js); tables carry the same data. */
export function Chart({ id, spec, label }: { id: string; spec: ChartSpec; label: string }): VNode {
  const json = JSON.stringify(spec).replace(/</g, "\\u003c");
  return (
    <div class="chart">
      <canvas data-chart={`${id}-data`} role="img" aria-label={label} data-testid={id} />
      <script
        type="application/json"
        id={`${id}-data`}
        dangerouslySetInnerHTML={{ __html: json }}
      />
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }): VNode {
  return <p class="muted">{children}</p>;
}

/** A short id, full in the tooltip: HS0123…cdef */
export function Sid({ id, href }: { id: string; href?: string }): VNode {
  const short = id.length > 20 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
  const text = (
    <code title={id} class="mono">
      {short}
    </code>
  );
  return href ? <a href={href}>{text}</a> : text;
}

export const simHref = (sim: string) => `/console/sims/${encodeURIComponent(sim)}`;
export const customerHref = (c: string) => `/console/customers/${encodeURIComponent(c)}`;

export function ReportingDisabled(): VNode {
  return (
    <p class="muted" data-testid="reporting-disabled-note">
      Reporting disabled: STRIPE_SECRET_KEY is not set, so invoice previews, parity and statements
      cannot be read from Stripe. Usage is still counted.
    </p>
  );
}
