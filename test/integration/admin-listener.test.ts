import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { networkInterfaces } from "node:os";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { openApiDocument } from "../../src/api/openapi.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import { runCli, type SimmeterProcess, startSimmeter, waitFor } from "../helpers/process.ts";
import { sessionInHour } from "../helpers/seed.ts";

// The admin listener (/healthz, /readyz, /metrics, /api) of real simmeter processes, on the
// ledger of the vitest project: a SQLite file or a PostgreSQL database, its `env` given to every
// process and CLI run.

const TOKEN = "t0ken-for-the-admin-listener-0123456789";
const SIMS = ["HS00000000000000000000000000000001", "HS00000000000000000000000000000002"];

/** An address of this machine other than loopback, when it has one. */
function externalAddress(): string | null {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return null;
}

/**
 * A ledger with usage for two SIMs over three hours each (1000, 2000, 3000 bytes: one data
 * session in each hour, ingested through the port), one quarantined event and two anomalies
 * (rows of fixed values no event produces, written with `sql`), and SIMS[0] assigned to cus_A.
 */
async function seedLedger(t: TestLedger): Promise<void> {
  const hour0 = Date.UTC(2026, 10, 1, 10);
  const events = SIMS.flatMap((sim, i) =>
    [0, 1, 2].flatMap((h) =>
      sessionInHour(
        sim,
        `8901${sim.slice(-14)}00`,
        i * 3 + h + 1,
        hour0 + h * 3_600_000,
        1000 * (h + 1),
      ),
    ),
  );
  const now = () => hour0 + 3 * 3_600_000;
  const s = await t.ledger.ingestJob(
    { v: 1, deliveries: [{ id: "seed", receivedAt: now(), source: "replay", events }] },
    defaultSettings,
    now,
  );
  expect(s).toMatchObject({ counted: events.length, quarantined: 0 });
  await t.sql(
    "insert into quarantine (received_at, source, delivery_id, position, event_sid, reason, raw) values (?, 'twilio', 'd1', 0, null, 'not JSON', '{x')",
    hour0,
  );
  const anomaly =
    "insert into anomalies (session_sid, event_sid, kind, detail, detected_at) values (?, ?, ?, 'x', ?)";
  await t.sql(anomaly, "PI1", "EZ1", "cumulative_decreased", hour0);
  await t.sql(anomaly, "PI2", "EZ2", "rate_exceeded", hour0 + 2 * 3_600_000);
  await t.ledger.assignments.assign(
    { targetType: "sim", targetId: SIMS[0] as string, customerId: "cus_A" },
    hour0,
    { rebill: false },
  );
}

describe("the admin listener beyond loopback needs ADMIN_TOKEN", () => {
  let app: SimmeterProcess;
  let t: TestLedger;
  const host = externalAddress() ?? "127.0.0.1";

  beforeAll(async () => {
    t = await openTestLedger({ file: true, autoClose: false });
    await seedLedger(t);
    app = await startSimmeter("start", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `t${randomUUID().slice(0, 8)}`,
      ...(t.env as Record<string, string>),
      ALLOW_UNSIGNED: "true",
      ADMIN_HOST: "0.0.0.0",
      ADMIN_TOKEN: TOKEN,
    });
    await waitFor(
      async () =>
        (await fetch(`${app.adminUrl}/readyz`, { headers: { authorization: `Bearer ${TOKEN}` } }))
          .ok,
      "ready",
    );
  });
  afterAll(async () => {
    await app?.stop();
    await t?.close();
  });

  const admin = (path: string, token?: string) =>
    fetch(
      `http://${host}:${app.adminPort}${path}`,
      token ? { headers: { authorization: `Bearer ${token}` } } : {},
    );

  it("refuses to start bound beyond loopback without a token, naming ADMIN_TOKEN", async () => {
    const other = await openTestLedger({ file: true });
    const r = await runCli(["serve"], {
      REDIS_URL: inject("redisUrl"),
      ...other.env,
      ALLOW_UNSIGNED: "true",
      ADMIN_HOST: "0.0.0.0",
      ADMIN_PORT: String(await freePort()),
      PORT: String(await freePort()),
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ADMIN_TOKEN/);
    expect(r.stderr).toMatch(/ADMIN_HOST=0\.0\.0\.0/);
  });

  it("refuses every admin path without the token or with a wrong one, except the liveness probe", async () => {
    const paths = [
      "/readyz",
      "/metrics",
      "/api/usage",
      "/api/usage/unmapped",
      "/api/quarantine",
      "/api/quarantine/1",
      "/api/anomalies",
      "/api/customers",
      "/api/report/status",
      "/api/openapi.json",
      "/no-such-path",
    ];
    for (const p of paths) {
      for (const token of [undefined, "wrong-token-wrong-token-wrong"]) {
        const r = await admin(p, token);
        expect(r.status, `${p} with ${token ?? "no token"}`).toBe(401);
        expect(r.headers.get("www-authenticate")).toMatch(/^Bearer/);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
      }
      const ok = await admin(p, TOKEN);
      expect(ok.status, `${p}: ${await ok.clone().text()}`).toBe(p === "/no-such-path" ? 404 : 200);
    }
    expect((await admin("/healthz")).status).toBe(200);
  });

  it("does not serve any admin path on the webhook listener", async () => {
    for (const p of ["/healthz", "/readyz", "/metrics", "/api/usage", "/api/openapi.json"]) {
      const r = await fetch(`${app.url}${p}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(r.status, p).toBe(404);
    }
  });

  it("pages through usage with limit and starting_after, every row once and in order", async () => {
    const all = (await (await admin("/api/usage?granularity=hour&limit=1000", TOKEN)).json()) as {
      data: { sim_sid: string; period: string; bytes: number }[];
      has_more: boolean;
    };
    expect(all.data).toHaveLength(6);
    expect(all.has_more).toBe(false);
    // Every page size, so that page boundaries fall between the hours of one SIM and between SIMs.
    for (let limit = 1; limit <= 7; limit++) {
      const seen: unknown[] = [];
      let cursor: string | null = null;
      for (let i = 0; i < 10; i++) {
        const q: string = `/api/usage?granularity=hour&limit=${limit}${cursor ? `&starting_after=${encodeURIComponent(cursor)}` : ""}`;
        const page = (await (await admin(q, TOKEN)).json()) as {
          data: unknown[];
          has_more: boolean;
          next_starting_after: string | null;
        };
        expect(page.data.length, `limit ${limit}`).toBeLessThanOrEqual(limit);
        seen.push(...page.data);
        if (!page.has_more) {
          expect(page.next_starting_after).toBeNull();
          break;
        }
        cursor = page.next_starting_after;
      }
      expect(seen, `limit ${limit}`).toEqual(all.data);
    }
  });

  it("filters anomalies by kind and time, and the CLI's --json is the same document", async () => {
    const since = "2026-11-01T11:00:00Z";
    const api = (await (await admin(`/api/anomalies?since=${since}`, TOKEN)).json()) as {
      data: { session_sid: string; kind: string; detected_at: string }[];
    };
    expect(api.data.map((a) => [a.session_sid, a.kind, a.detected_at])).toEqual([
      ["PI2", "rate_exceeded", "2026-11-01T12:00:00.000Z"],
    ]);
    const byKind = (await (
      await admin("/api/anomalies?kind=cumulative_decreased", TOKEN)
    ).json()) as { data: { session_sid: string }[] };
    expect(byKind.data.map((a) => a.session_sid)).toEqual(["PI1"]);
    const cli = await runCli(["anomalies", "--since", since, "--json"], t.env);
    expect(cli.status, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toEqual(api);
    for (const [args, path] of [
      [["usage", "--by", "hour", "--json"], "/api/usage?granularity=hour&limit=1000"],
      [["usage", "--unmapped", "--json"], "/api/usage/unmapped"],
      [["quarantine", "--json"], "/api/quarantine"],
      [["customers", "list", "--json"], "/api/customers"],
    ] as const) {
      const c = await runCli([...args], t.env);
      expect(c.status, c.stderr).toBe(0);
      expect(JSON.parse(c.stdout), args.join(" ")).toEqual(await (await admin(path, TOKEN)).json());
    }
  });

  it("answers bad parameters with a JSON error naming the parameter", async () => {
    for (const [q, param] of [
      ["/api/usage?limit=abc", "limit"],
      ["/api/usage?limit=0", "limit"],
      ["/api/usage?limit=1001", "limit"],
      ["/api/usage?from=01/12/2026", "from"],
      ["/api/usage?granularity=week", "granularity"],
      ["/api/usage?colour=blue", "colour"],
      ["/api/quarantine?starting_after=abc", "starting_after"],
      ["/api/usage?limit=1&limit=2", "limit"],
    ] as const) {
      const r = await admin(q, TOKEN);
      expect(r.status, q).toBe(400);
      const body = (await r.json()) as { error: { code: string; param: string; message: string } };
      expect(body.error.code, q).toBe("invalid_parameter");
      expect(body.error.param, q).toBe(param);
    }
    const missing = await admin("/api/quarantine/999", TOKEN);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });

  it("answers in snake_case with ISO times, the same document the OpenAPI file describes", async () => {
    const q = (await (await admin("/api/quarantine", TOKEN)).json()) as {
      data: Record<string, unknown>[];
    };
    expect(q.data[0]).toMatchObject({
      id: 1,
      reason: "not JSON",
      raw: "{x",
      received_at: "2026-11-01T10:00:00.000Z",
      counted: null,
    });
    const c = (await (await admin("/api/customers", TOKEN)).json()) as {
      data: Record<string, unknown>[];
    };
    expect(c.data[0]).toMatchObject({
      target_type: "sim",
      target_id: SIMS[0],
      customer_id: "cus_A",
      effective_from: "2026-11-01T10:00:00.000Z",
    });
    const u = (await (await admin("/api/usage/unmapped", TOKEN)).json()) as {
      data: Record<string, unknown>[];
    };
    expect(u.data).toEqual([
      expect.objectContaining({
        sim_sid: SIMS[1],
        bytes: 6000,
        first_hour: "2026-11-01T10:00:00.000Z",
        last_hour: "2026-11-01T12:00:00.000Z",
      }),
    ]);
    const served = await (await admin("/api/openapi.json", TOKEN)).json();
    const committed = JSON.parse(
      readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8"),
    );
    expect(served).toEqual(committed);
    const keys = (o: unknown): string[] =>
      o && typeof o === "object"
        ? Object.entries(o).flatMap(([k, v]) => [...(Array.isArray(o) ? [] : [k]), ...keys(v)])
        : [];
    for (const body of [q, c, u]) for (const k of keys(body)) expect(k).toMatch(/^[a-z0-9_]+$/);
  });
});

describe("every role has the admin listener", () => {
  it("simmeter work answers /readyz (Redis, database, ingest worker) and /metrics", async () => {
    const t = await openTestLedger({ file: true });
    const app = await startSimmeter("work", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `t${randomUUID().slice(0, 8)}`,
      ...(t.env as Record<string, string>),
    });
    try {
      const ready = await waitFor(async () => {
        const r = await fetch(`${app.adminUrl}/readyz`);
        return r.status === 200 ? r.json() : null;
      }, "work ready");
      expect(ready).toEqual({
        ok: true,
        checks: { redis: "ok", database: "ok", ingest_worker: "ok" },
      });
      const metrics = await (await fetch(`${app.adminUrl}/metrics`)).text();
      expect(metrics).toMatch(
        /^simmeter_ingested_events_total|# TYPE simmeter_ingested_events_total counter/m,
      );
      // Without ADMIN_TOKEN: loopback only, and a request under another name (DNS rebinding: a
      // hostile page's name resolving to 127.0.0.1) is refused on every path but /healthz.
      for (const path of ["/api/usage", "/api/quarantine", "/metrics", "/readyz", "/healthz"]) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = httpRequest(
            `${app.adminUrl}${path}`,
            { headers: { host: "rebound.example:8081" } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on("error", reject);
          req.end();
        });
        expect(status, path).toBe(path === "/healthz" ? 200 : 403);
      }
    } finally {
      expect(await app.stop()).toBe(0);
    }
  });
});

describe("the committed OpenAPI document", () => {
  it("is what the route table generates (npx tsx scripts/openapi.ts rewrites it)", () => {
    const committed = JSON.parse(
      readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8"),
    );
    expect(JSON.parse(JSON.stringify(openApiDocument()))).toEqual(committed);
  });
});
