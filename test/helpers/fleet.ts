import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { type GenSession, inOrderBuckets, sessionArb } from "./sessions.ts";

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";

/** A deterministic fleet of sessions and the usage they must produce. */
export function fleet(n: number, seed: number) {
  const sessions = fc.sample(
    fc
      .integer({ min: 1, max: 40 })
      .chain((sim) => sessionArb(`HS${sim.toString(16).padStart(32, "0")}`, `PI${randomHex()}`)),
    { numRuns: n, seed },
  );
  const events = sessions.flatMap((s) => eventsOf(s));
  const expected: Record<string, number> = {};
  for (const s of sessions) {
    for (const [hour, bytes] of inOrderBuckets(s.readings)) {
      const k = `${s.simSid}@${new Date(hour).toISOString()}`;
      expected[k] = (expected[k] ?? 0) + bytes;
    }
  }
  for (const k of Object.keys(expected)) if (expected[k] === 0) delete expected[k];
  return { events, expected };
}

function randomHex(): string {
  return randomUUID().replaceAll("-", "");
}

function eventsOf(s: GenSession) {
  return s.readings.map((r) =>
    buildCloudEvent({
      eventSid: `EZ${randomHex()}`,
      kind: r.ended ? "data-session.ended" : "data-session.updated",
      accountSid: ACCOUNT,
      simSid: s.simSid,
      iccid: "89883070000005381783",
      timestampMs: r.t,
      sessionSid: s.sessionSid,
      sessionStartMs: s.start,
      windowStartMs: r.windowStart ?? s.start,
      windowEndMs: r.t,
      windowDown: r.window ?? 0,
      cumulativeDown: r.cumulative ?? 0,
      ...(r.ended ? { sessionEndMs: r.t } : {}),
    }),
  );
}

export function sortKeys(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
}

type Ev = {
  data: {
    data_session_sid?: string;
    sim_sid: string;
    data_session_update_end_time?: string;
    data_session_end_time?: string;
    data_session_data_total?: number;
    event_type: string;
  };
};

/** The in-order usage of a list of CloudEvents (v2, realtime, end attribution), computed directly. */
export function truthOf(events: readonly unknown[]): Record<string, number> {
  const bySession = new Map<string, { sim: string; t: number; c: number }[]>();
  for (const raw of events) {
    const d = (raw as Ev).data;
    if (!d.data_session_sid || !/data-session\.(updated|ended)$/.test(d.event_type)) continue;
    const t = Date.parse(
      (d.event_type.endsWith("ended") ? d.data_session_end_time : d.data_session_update_end_time) ??
        "",
    );
    const list = bySession.get(d.data_session_sid) ?? [];
    list.push({ sim: d.sim_sid, t, c: d.data_session_data_total ?? 0 });
    bySession.set(d.data_session_sid, list);
  }
  const out: Record<string, number> = {};
  for (const list of bySession.values()) {
    list.sort((a, b) => a.t - b.t);
    let prev = 0;
    for (const r of list) {
      const hour = Math.floor((r.t - 1) / 3_600_000) * 3_600_000;
      const k = `${r.sim}@${new Date(hour).toISOString()}`;
      out[k] = (out[k] ?? 0) + (r.c - prev);
      prev = r.c;
    }
  }
  for (const k of Object.keys(out)) if (out[k] === 0) delete out[k];
  return out;
}
