import type { ConnectionKind } from "../events/schema.ts";
import { buildCloudEvent, type Envelope, type EventSpec } from "./cloud-event.ts";

// A seeded, streaming fleet of Super SIMs: sessions, update windows, noise and the delivery
// perturbations Event Streams really produces, plus the usage they must bill. Pure: no I/O, no
// clock, no Math.random. Memory is per SIM (plus two bounded buffers), so a stream of millions
// of events runs in flat memory.

export type FleetOptions = {
  seed: number;
  /** number of Stripe customers the SIMs belong to */
  customers: number;
  sims: number;
  /** epoch ms window of simulated activity; snapped inwards to whole seconds */
  from: number;
  to: number;
  /** default 6 min, jittered by up to ±10 s per window */
  updateIntervalMs?: number;
  /**
   * ended-only models a subscription to data-session.ended alone (what Twilio's changelog
   * suggests for non-real-time billing), so only ended events are emitted.
   */
  billingMode?: "realtime" | "ended-only";
  perturb?: {
    /** share of emitted events that are re-emitted, byte-identical, later in the stream */
    duplicateRate?: number;
    /** shuffle events locally within reorderWindowMs */
    reorder?: boolean;
    /** default 3 min */
    reorderWindowMs?: number;
    /** a duplicate follows its original by 1 s up to this; default 15 min */
    duplicateDelayMaxMs?: number;
    /** share of updated events never emitted; ended events are never lost */
    lostUpdateRate?: number;
  };
  noise?: {
    /** share of sessions preceded by attachment.accepted (default 0.25); a tenth of this rate adds a stray attachment.rejected/failed */
    attachmentRate?: number;
    /** share of connection attempts that start with dozens of attachment.rejected in minutes (default 0.005) */
    rejectionStormRate?: number;
    /** share of connection attempts that begin with a data-session.failed (default 0.02) */
    failedSessionRate?: number;
  };
  /** default 2; v1 omits the cumulative counters */
  schemaVersion?: 1 | 2;
  /** default twilio */
  envelope?: Envelope;
};

export type GroundTruth = {
  /** simSid → customer id (cus_...) */
  customers: Record<string, string>;
  /** fleetSid → customer id; some SIMs have no fleet */
  fleets: Record<string, string>;
  /**
   * Bytes per SIM and per customer per hour bucket (bucket start, ms) under ATTRIBUTION=end for
   * the chosen billing mode, from the readings actually emitted (after losses). Every SIM and
   * every customer has an entry, possibly empty.
   */
  simHour: Map<string, Map<number, number>>;
  customerHour: Map<string, Map<number, number>>;
  /** sum of simHour */
  totalBytes: number;
  /** bytes the sessions really carried; differs from totalBytes only when readings were lost (v1) or not subscribed to (v1 ended-only) */
  carriedBytes: number;
  /** events emitted, including duplicates and noise */
  events: number;
  /** emitted updated + ended events, including duplicates */
  billingEvents: number;
  duplicates: number;
  lostUpdates: number;
  sessions: number;
  from: number;
  to: number;
};

export type FleetSimulation = {
  /** single pass: CloudEvents in emission order */
  events: Iterable<Record<string, unknown>>;
  /** valid once events has been consumed to the end */
  truth(): GroundTruth;
};

const HOUR_MS = 3_600_000;
const SECOND = 1000;

// Written out again rather than imported from src/accounting: the truth exists to check that
// code. A reading at t belongs to the hour h with h < t <= h+1h.
const readingHour = (t: number) => Math.floor((t - 1) / HOUR_MS) * HOUR_MS;

// ---------------------------------------------------------------------------------------------
// PRNG: sfc32 seeded through splitmix32, so neighbouring seeds and streams are unrelated.

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream = 0) {
    let s = (Math.floor(seed) ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
    // Seeds above 2^32 would otherwise collide with their low 32 bits.
    s = (s + Math.imul(Math.floor(seed / 0x100000000) >>> 0, 0x85ebca6b)) >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t0 = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    const t = (t0 + this.d) | 0;
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** [0, 1) */
  float(): number {
    return this.u32() / 0x100000000;
  }

  /** integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return p > 0 && this.float() < p;
  }

  normal(): number {
    const u = 1 - this.float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.float());
  }

  logUniform(lo: number, hi: number): number {
    return Math.exp(Math.log(lo) + this.float() * (Math.log(hi) - Math.log(lo)));
  }

  hex(words: number): string {
    let out = "";
    for (let i = 0; i < words; i++) out += this.u32().toString(16).padStart(8, "0");
    return out;
  }

  digits(n: number): string {
    let out = "";
    for (let i = 0; i < n; i++) out += String(this.int(0, 9));
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Min-heap with a caller-supplied order; both queues below need a strict total order so that
// equal inputs give equal streams.

class Heap<T> {
  private items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(x: T): void {
    const a = this.items;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i] as T, a[p] as T)) break;
      [a[i], a[p]] = [a[p] as T, a[i] as T];
      i = p;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      this.down(0);
    }
    return top;
  }

  /** re-sorts after the top item's key grew */
  fixTop(): void {
    if (this.items.length > 1) this.down(0);
  }

  private down(i: number): void {
    const a = this.items;
    const n = a.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(a[l] as T, a[m] as T)) m = l;
      if (r < n && this.less(a[r] as T, a[m] as T)) m = r;
      if (m === i) return;
      [a[i], a[m]] = [a[m] as T, a[i] as T];
      i = m;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-SIM model.

type Profile = {
  sessionMinMs: number;
  sessionMaxMs: number;
  gapMinMs: number;
  gapMaxMs: number;
  /** median bytes in a full update window */
  windowBytes: number;
  upShare: number;
};

type Session = {
  sid: string;
  start: number;
  end: number;
  /** end of the last window, emitted or not */
  lastT: number;
  cumDown: number;
  cumUp: number;
  /** largest cumulative total among billed, emitted readings */
  billedMax: number;
};

type Step = { t: number; spec: EventSpec };

type Sim = {
  idx: number;
  sid: string;
  iccid: string;
  fleetSid: string | null;
  customer: string;
  /** behaviour: sessions, bytes, noise, loss */
  rng: Rng;
  /** event ids only, so emitting fewer kinds (ended-only) leaves the behaviour unchanged */
  ids: Rng;
  profile: Profile;
  pending: Step[];
  pendingAt: number;
  session: Session | null;
  nextEpisodeAt: number;
  hours: Map<number, number>;
  next: Step | null;
};

function pickProfile(rng: Rng): Profile {
  const windowBytes = Math.round(rng.logUniform(300, 300_000));
  const upShare = 0.05 + rng.float() * 0.4;
  const r = rng.float();
  // Trackers and gateways hold a session for hours (and across midnight); meters wake up,
  // send and hang up; the rest do a bit of both.
  if (r < 0.3) {
    return {
      sessionMinMs: 4 * HOUR_MS,
      sessionMaxMs: 48 * HOUR_MS,
      gapMinMs: 5 * SECOND,
      gapMaxMs: 3 * 60 * SECOND,
      windowBytes,
      upShare,
    };
  }
  if (r < 0.7) {
    return {
      sessionMinMs: 60 * SECOND,
      sessionMaxMs: 8 * HOUR_MS,
      gapMinMs: 30 * SECOND,
      gapMaxMs: 3 * HOUR_MS,
      windowBytes,
      upShare,
    };
  }
  return {
    sessionMinMs: 2 * 60 * SECOND,
    sessionMaxMs: 45 * 60 * SECOND,
    gapMinMs: 5 * 60 * SECOND,
    gapMaxMs: 2 * HOUR_MS,
    windowBytes,
    upShare,
  };
}

const seconds = (ms: number) => Math.max(SECOND, Math.round(ms / SECOND) * SECOND);

export function simulateFleet(o: FleetOptions): FleetSimulation {
  if (!Number.isFinite(o.seed)) throw new Error("seed must be a finite number");
  if (!Number.isInteger(o.customers) || o.customers < 1)
    throw new Error("customers must be a positive integer");
  if (!Number.isInteger(o.sims) || o.sims < 1) throw new Error("sims must be a positive integer");
  // Times inside data carry whole seconds only, so the model works in whole seconds.
  const from = Math.ceil(o.from / SECOND) * SECOND;
  const to = Math.floor(o.to / SECOND) * SECOND;
  if (!(to > from)) throw new Error("to must be after from");

  const interval = seconds(o.updateIntervalMs ?? 360_000);
  const jitterS = Math.min(10, Math.floor(interval / SECOND / 10));
  const mode = o.billingMode ?? "realtime";
  const schemaVersion = o.schemaVersion ?? 2;
  const envelope = o.envelope ?? "twilio";
  const dupRate = o.perturb?.duplicateRate ?? 0;
  const lostRate = o.perturb?.lostUpdateRate ?? 0;
  const reorder = o.perturb?.reorder ?? false;
  const reorderWindow = o.perturb?.reorderWindowMs ?? 3 * 60 * SECOND;
  const dupDelayMax = Math.max(SECOND, o.perturb?.duplicateDelayMaxMs ?? 15 * 60 * SECOND);
  const attachmentRate = o.noise?.attachmentRate ?? 0.25;
  const stormRate = o.noise?.rejectionStormRate ?? 0.005;
  const failedRate = o.noise?.failedSessionRate ?? 0.02;
  for (const [name, v] of Object.entries({
    duplicateRate: dupRate,
    lostUpdateRate: lostRate,
    attachmentRate,
    rejectionStormRate: stormRate,
    failedSessionRate: failedRate,
  })) {
    if (!(v >= 0 && v <= 1)) throw new Error(`${name} must be between 0 and 1`);
  }
  // A subscription to data-session.ended alone delivers nothing else.
  const emits = (kind: ConnectionKind) => mode === "realtime" || kind === "data-session.ended";

  // Fleet layout comes from its own stream so that it does not shift when behaviour changes.
  const layout = new Rng(o.seed, 0);
  const accountSid = `AC${layout.hex(4)}`;
  const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const customerIds: string[] = [];
  const customerWeights: number[] = [];
  const customerFleets: string[][] = [];
  const fleets: Record<string, string> = {};
  for (let c = 0; c < o.customers; c++) {
    let id = "cus_";
    for (let i = 0; i < 14; i++) id += alnum[layout.int(0, alnum.length - 1)];
    customerIds.push(id);
    // Customer sizes are skewed: a few own most of the SIMs.
    customerWeights.push(layout.logUniform(1, 30));
    const own: string[] = [];
    const nFleets = layout.int(1, 3);
    for (let f = 0; f < nFleets; f++) {
      const fleet = `HF${layout.hex(4)}`;
      own.push(fleet);
      fleets[fleet] = id;
    }
    customerFleets.push(own);
  }
  const weightSum = customerWeights.reduce((a, b) => a + b, 0);
  const pickCustomer = (): number => {
    let x = layout.float() * weightSum;
    for (let c = 0; c < customerWeights.length; c++) {
      x -= customerWeights[c] as number;
      if (x < 0) return c;
    }
    return customerWeights.length - 1;
  };

  const sims: Sim[] = [];
  const customers: Record<string, string> = {};
  for (let i = 0; i < o.sims; i++) {
    // The first SIMs go round-robin so every customer has at least one when sims >= customers.
    const c = i < o.customers ? i : pickCustomer();
    const own = customerFleets[c] as string[];
    const fleetSid = layout.chance(0.05) ? null : (own[layout.int(0, own.length - 1)] as string);
    const sid = `HS${layout.hex(4)}`;
    const iccid = `8988307${layout.digits(layout.chance(0.5) ? 12 : 13)}`;
    const customer = customerIds[c] as string;
    customers[sid] = customer;
    const rng = new Rng(o.seed, 2 * i + 1);
    const profile = pickProfile(rng);
    // Some devices are already mid-cycle at `from`: start within the first gap.
    const firstAt = from + seconds(rng.float() * Math.min(profile.gapMaxMs, 30 * 60 * SECOND));
    sims.push({
      idx: i,
      sid,
      iccid,
      fleetSid,
      customer,
      rng,
      ids: new Rng(o.seed, 2 * i + 2),
      profile,
      pending: [],
      pendingAt: 0,
      session: null,
      nextEpisodeAt: firstAt,
      hours: new Map(),
      next: null,
    });
  }

  let carriedBytes = 0;
  let totalBytes = 0;
  let lostUpdates = 0;
  let sessions = 0;

  const base = (sim: Sim, kind: ConnectionKind, t: number): EventSpec => ({
    eventSid: `EZ${sim.ids.hex(4)}`,
    kind,
    accountSid,
    simSid: sim.sid,
    iccid: sim.iccid,
    fleetSid: sim.fleetSid,
    timestampMs: t,
    schemaVersion,
  });

  const bill = (sim: Sim, t: number, amount: number) => {
    if (amount === 0) return;
    const h = readingHour(t);
    sim.hours.set(h, (sim.hours.get(h) ?? 0) + amount);
    totalBytes += amount;
  };

  const windowBytes = (sim: Sim, durationMs: number): { down: number; up: number } => {
    const { rng, profile } = sim;
    // Idle windows are common (the captured update carries zeros).
    if (rng.chance(0.12)) return { down: 0, up: 0 };
    let v = profile.windowBytes * Math.exp(1.1 * rng.normal());
    if (rng.chance(0.01)) v *= rng.logUniform(20, 500);
    v = Math.min(1e9, Math.floor((v * durationMs) / interval));
    const share = Math.min(0.95, Math.max(0, profile.upShare + 0.1 * (rng.float() - 0.5)));
    const up = Math.floor(v * share);
    return { down: v - up, up };
  };

  /** Next emitted step of one SIM, in time order, or null once it has nothing left before `to`. */
  const advance = (sim: Sim): Step | null => {
    for (;;) {
      if (sim.pendingAt < sim.pending.length) {
        const step = sim.pending[sim.pendingAt++] as Step;
        if (sim.pendingAt === sim.pending.length) {
          sim.pending = [];
          sim.pendingAt = 0;
        }
        return step;
      }
      const s = sim.session;
      if (s) {
        const nextT = s.lastT + interval + sim.rng.int(-jitterS, jitterS) * SECOND;
        const ended = nextT >= s.end;
        const t = ended ? s.end : nextT;
        const { down, up } = windowBytes(sim, t - s.lastT);
        const windowStart = s.lastT;
        s.lastT = t;
        s.cumDown += down;
        s.cumUp += up;
        carriedBytes += down + up;
        const kind: ConnectionKind = ended ? "data-session.ended" : "data-session.updated";
        if (ended) {
          sim.session = null;
          sim.nextEpisodeAt =
            t + seconds(sim.rng.logUniform(sim.profile.gapMinMs, sim.profile.gapMaxMs));
        }
        // Drawn for every update, emitted or not, so loss does not shift later randomness.
        const lost = !ended && sim.rng.chance(lostRate);
        if (!emits(kind)) continue;
        if (lost) {
          lostUpdates++;
          continue;
        }
        const spec = base(sim, kind, t);
        spec.sessionSid = s.sid;
        spec.sessionStartMs = s.start;
        if (ended) spec.sessionEndMs = t;
        spec.windowStartMs = windowStart;
        spec.windowEndMs = t;
        spec.windowDown = down;
        spec.windowUp = up;
        spec.cumulativeDown = s.cumDown;
        spec.cumulativeUp = s.cumUp;
        if (schemaVersion >= 2) {
          const cum = s.cumDown + s.cumUp;
          if (cum > s.billedMax) {
            bill(sim, t, cum - s.billedMax);
            s.billedMax = cum;
          }
        } else {
          bill(sim, t, down + up);
        }
        return { t, spec };
      }
      if (sim.nextEpisodeAt >= to) return null;
      planEpisode(sim);
    }
  };

  /** Queues one connection attempt (noise, then a session) starting at sim.nextEpisodeAt. */
  const planEpisode = (sim: Sim) => {
    const { rng } = sim;
    let t = sim.nextEpisodeAt;
    const steps: Step[] = [];
    const add = (kind: ConnectionKind, error?: EventSpec["error"]) => {
      if (t >= to || !emits(kind)) return;
      const spec = base(sim, kind, t);
      if (error) spec.error = error;
      steps.push({ t, spec });
    };
    if (rng.chance(stormRate)) {
      // A device that keeps retrying its attach gets rate-limited: dozens of rejections in minutes.
      const n = rng.int(20, 80);
      const gap = rng.logUniform(60 * SECOND, 5 * 60 * SECOND) / n;
      for (let i = 0; i < n; i++) {
        add("attachment.rejected", { code: 83703, message: "simulated: attach rate-limited" });
        t += seconds(gap * (0.5 + rng.float()));
      }
      t += seconds(rng.logUniform(5 * SECOND, 2 * 60 * SECOND));
    }
    if (rng.chance(attachmentRate / 10)) {
      if (rng.chance(0.5)) {
        add("attachment.rejected", { code: 83705, message: "simulated: SIM inactive" });
      } else {
        add("attachment.failed", { code: 0, message: "simulated: attach failed" });
      }
      t += seconds(rng.logUniform(2 * SECOND, 60 * SECOND));
    }
    if (rng.chance(failedRate)) {
      add("data-session.failed", {
        code: 0,
        message: "simulated: data session could not be set up",
      });
      t += seconds(rng.logUniform(2 * SECOND, 30 * SECOND));
    }
    if (rng.chance(attachmentRate)) {
      add("attachment.accepted");
      t += rng.int(1, 5) * SECOND;
    }
    const duration = seconds(rng.logUniform(sim.profile.sessionMinMs, sim.profile.sessionMaxMs));
    const sid = `PI${rng.hex(4)}`;
    if (t < to) {
      sessions++;
      const start = t;
      sim.session = {
        sid,
        start,
        // Open at the end of the window: close it there so every total is final.
        end: Math.min(start + duration, to),
        lastT: start,
        cumDown: 0,
        cumUp: 0,
        billedMax: 0,
      };
      if (emits("data-session.started")) {
        const spec = base(sim, "data-session.started", start);
        spec.sessionSid = sid;
        spec.sessionStartMs = start;
        steps.push({ t: start, spec });
      }
    } else {
      sim.nextEpisodeAt = to;
    }
    sim.pending = steps;
    sim.pendingAt = 0;
  };

  let consumed = false;
  let events = 0;
  let billingEvents = 0;
  let duplicates = 0;

  function* run(): Generator<Record<string, unknown>> {
    const byTime = new Heap<Sim>(
      (a, b) =>
        (a.next as Step).t < (b.next as Step).t ||
        ((a.next as Step).t === (b.next as Step).t && a.idx < b.idx),
    );
    for (const sim of sims) {
      sim.next = advance(sim);
      if (sim.next) byTime.push(sim);
    }
    // Perturbations get their own stream so that switching them on leaves the fleet unchanged.
    const perturbRng = new Rng(o.seed, 0x7fffffff);
    const perturbed = reorder || dupRate > 0;
    type Out = { key: number; seq: number; event: Record<string, unknown>; billing: boolean };
    const out = new Heap<Out>((a, b) => a.key < b.key || (a.key === b.key && a.seq < b.seq));
    // A safety valve only: the windows above keep the buffer far smaller for sane fleets.
    const maxBuffered = 200_000;
    let seq = 0;
    const count = (x: Out) => {
      events++;
      if (x.billing) billingEvents++;
      return x.event;
    };

    for (;;) {
      const sim = byTime.peek();
      const step = sim?.next;
      if (!sim || !step) break;
      // Everything keyed at or before this time can no longer be overtaken by a later step.
      while ((out.peek()?.key ?? Number.POSITIVE_INFINITY) <= step.t || out.size > maxBuffered) {
        yield count(out.pop() as Out);
      }
      const event = buildCloudEvent(step.spec, envelope);
      const billing =
        step.spec.kind === "data-session.updated" || step.spec.kind === "data-session.ended";
      if (!perturbed) {
        events++;
        if (billing) billingEvents++;
        yield event;
      } else {
        const key = reorder ? step.t + Math.floor(perturbRng.float() * reorderWindow) : step.t;
        out.push({ key, seq: seq++, event, billing });
        if (perturbRng.chance(dupRate)) {
          duplicates++;
          const delay = SECOND + Math.floor(perturbRng.float() * (dupDelayMax - SECOND));
          out.push({ key: key + delay, seq: seq++, event, billing });
        }
      }
      sim.next = advance(sim);
      if (sim.next) byTime.fixTop();
      else byTime.pop();
    }
    while (out.size > 0) yield count(out.pop() as Out);
    consumed = true;
  }

  let started = false;
  const events$: Iterable<Record<string, unknown>> = {
    [Symbol.iterator]() {
      if (started) throw new Error("the event stream of a fleet simulation can be read only once");
      started = true;
      return run();
    },
  };

  return {
    events: events$,
    truth(): GroundTruth {
      if (!consumed) throw new Error("read the whole event stream before asking for the truth");
      const simHour = new Map<string, Map<number, number>>();
      const customerHour = new Map<string, Map<number, number>>();
      for (const id of customerIds) customerHour.set(id, new Map());
      for (const sim of sims) {
        simHour.set(sim.sid, new Map([...sim.hours].sort((a, b) => a[0] - b[0])));
        const ch = customerHour.get(sim.customer) as Map<number, number>;
        for (const [h, v] of sim.hours) ch.set(h, (ch.get(h) ?? 0) + v);
      }
      for (const [id, m] of customerHour) {
        customerHour.set(id, new Map([...m].sort((a, b) => a[0] - b[0])));
      }
      return {
        customers: { ...customers },
        fleets: { ...fleets },
        simHour,
        customerHour,
        totalBytes,
        carriedBytes,
        events,
        billingEvents,
        duplicates,
        lostUpdates,
        sessions,
        from,
        to,
      };
    },
  };
}

/** CloudEvents of a simulated fleet in emission order; use simulateFleet for the truth too. */
export function* generateFleet(o: FleetOptions): Generator<Record<string, unknown>> {
  yield* simulateFleet(o).events;
}
