import { type Command, InvalidArgumentError, Option } from "commander";
import { parseUtcTime } from "../lib/time.ts";
import { type FleetOptions, simulateFleet } from "../simulate/fleet.ts";
import {
  type Signing,
  sendDeliveries,
  writeCustomersCsv,
  writeEventsJsonl,
  writeTruthJson,
} from "../simulate/output.ts";

type SimulateFlags = {
  seed: number;
  customers: number;
  sims: number;
  hours: number;
  from?: string;
  intervalMs?: number;
  out?: string;
  truth?: string;
  customersCsv?: string;
  duplicates: number;
  lost: number;
  reorder: boolean;
  mode: "realtime" | "ended-only";
  schema: 1 | 2;
  envelope?: "twilio" | "kore";
  attachmentRate?: number;
  stormRate?: number;
  failedSessionRate?: number;
  send?: string;
  twilioToken?: string;
  koreSecret?: string;
  publicUrl?: string;
  rate?: number;
  batchMin: number;
  batchMax: number;
  concurrency: number;
  maxRetries: number;
};

const int = (name: string, min: number) => (v: string) => {
  // Digits only: Number() would also take "1e3", "0x10", "" and " ".
  const n = /^-?\d+$/.test(v.trim()) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min)
    throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
  return n;
};
const positive = (name: string) => (v: string) => {
  const n = /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : Number.NaN;
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a number > 0`);
  return n;
};
const rate = (name: string) => (v: string) => {
  const n = /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : Number.NaN;
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`${name} must be between 0 and 1`);
  return n;
};

/** Adds the simulator's options and action to cmd (a subcommand, or a script's root command). */
export function configureSimulateCommand(cmd: Command): Command {
  return cmd
    .description(
      "generate a seeded Super SIM fleet: CloudEvents as JSON lines (or live signed deliveries) plus the usage they must bill",
    )
    .addOption(
      new Option("--seed <n>", "PRNG seed")
        .argParser(int("--seed", Number.MIN_SAFE_INTEGER))
        .default(1),
    )
    .addOption(
      new Option("--customers <n>", "Stripe customers").argParser(int("--customers", 1)).default(5),
    )
    .addOption(new Option("--sims <n>", "SIMs").argParser(int("--sims", 1)).default(50))
    .addOption(
      new Option("--hours <n>", "hours of activity").argParser(positive("--hours")).default(6),
    )
    .option(
      "--from <iso>",
      "start of the window (default: the current UTC hour minus --hours, so it ends now; pass it to reproduce a run)",
    )
    .addOption(
      new Option("--interval-ms <ms>", "update interval (default 360000)").argParser(
        int("--interval-ms", 1000),
      ),
    )
    .option("--out <file>", "write events as JSON lines")
    .option("--truth <file>", "write the ground truth as JSON")
    .option("--customers-csv <file>", "write sim_sid,stripe_customer_id")
    .addOption(
      new Option("--duplicates <rate>", "share of events re-emitted later")
        .argParser(rate("--duplicates"))
        .default(0),
    )
    .addOption(
      new Option("--lost <rate>", "share of updated events never emitted")
        .argParser(rate("--lost"))
        .default(0),
    )
    .option("--reorder", "shuffle events within a few minutes", false)
    .addOption(
      new Option("--mode <mode>", "billing subscription")
        .choices(["realtime", "ended-only"])
        .default("realtime"),
    )
    .addOption(
      new Option("--schema <v>", "SuperSim.ConnectionEvent schema version (1 or 2)")
        .argParser((v) => {
          if (v !== "1" && v !== "2") throw new InvalidArgumentError("--schema must be 1 or 2");
          return Number(v) as 1 | 2;
        })
        .default(2),
    )
    .addOption(
      new Option(
        "--envelope <kind>",
        "CloudEvent envelope (default: kore with --kore-secret, else twilio)",
      ).choices(["twilio", "kore"]),
    )
    .addOption(
      new Option(
        "--attachment-rate <rate>",
        "share of sessions preceded by attachment.accepted",
      ).argParser(rate("--attachment-rate")),
    )
    .addOption(
      new Option(
        "--storm-rate <rate>",
        "share of connection attempts with a rejection storm",
      ).argParser(rate("--storm-rate")),
    )
    .addOption(
      new Option(
        "--failed-session-rate <rate>",
        "share of attempts with data-session.failed",
      ).argParser(rate("--failed-session-rate")),
    )
    .option("--send <url>", "POST deliveries to this URL instead of writing --out")
    .option("--twilio-token <token>", "sign deliveries as Twilio Event Streams")
    .option("--kore-secret <secret>", "sign deliveries as KORE Event Streams")
    .option(
      "--public-url <url>",
      "the URL the receiver believes it is reached at (default: --send)",
    )
    .addOption(new Option("--rate <n>", "deliveries per second").argParser(positive("--rate")))
    .addOption(
      new Option("--batch-min <n>", "fewest events per delivery")
        .argParser(int("--batch-min", 1))
        .default(1),
    )
    .addOption(
      new Option("--batch-max <n>", "most events per delivery")
        .argParser(int("--batch-max", 1))
        .default(1),
    )
    .addOption(
      new Option("--concurrency <n>", "deliveries in flight")
        .argParser(int("--concurrency", 1))
        .default(8),
    )
    .addOption(
      new Option("--max-retries <n>", "retries per delivery on 5xx/429/timeouts")
        .argParser(int("--max-retries", 0))
        .default(10),
    )
    .action(async (flags: SimulateFlags) => {
      await runSimulate(flags);
    });
}

export function registerSimulateCommand(program: Command): void {
  configureSimulateCommand(program.command("simulate"));
}

async function runSimulate(f: SimulateFlags): Promise<void> {
  if (!f.out && !f.send)
    throw new Error("give --out <file> to write events or --send <url> to deliver them");
  if (f.out && f.send) throw new Error("--out and --send exclude each other");
  if (f.twilioToken && f.koreSecret)
    throw new Error("--twilio-token and --kore-secret exclude each other");
  if (f.batchMax < f.batchMin) throw new Error("--batch-max must be >= --batch-min");
  const hourMs = 3_600_000;
  let from: number;
  if (f.from !== undefined) {
    from = parseUtcTime(f.from, "--from");
  } else {
    from = Math.floor(Date.now() / hourMs) * hourMs - Math.round(f.hours * hourMs);
  }
  const to = from + Math.round(f.hours * hourMs);
  const envelope = f.envelope ?? (f.koreSecret ? "kore" : "twilio");
  const noise: FleetOptions["noise"] = {};
  if (f.attachmentRate !== undefined) noise.attachmentRate = f.attachmentRate;
  if (f.stormRate !== undefined) noise.rejectionStormRate = f.stormRate;
  if (f.failedSessionRate !== undefined) noise.failedSessionRate = f.failedSessionRate;
  const sim = simulateFleet({
    seed: f.seed,
    customers: f.customers,
    sims: f.sims,
    from,
    to,
    ...(f.intervalMs !== undefined ? { updateIntervalMs: f.intervalMs } : {}),
    billingMode: f.mode,
    perturb: { duplicateRate: f.duplicates, lostUpdateRate: f.lost, reorder: f.reorder },
    noise,
    schemaVersion: f.schema,
    envelope,
  });

  const started = performance.now();
  let lastReport = started;
  const report = (line: () => string) => {
    const now = performance.now();
    if (now - lastReport < 2000) return;
    lastReport = now;
    process.stderr.write(`${line()}\n`);
  };
  const elapsed = () => (performance.now() - started) / 1000;

  let delivery: Awaited<ReturnType<typeof sendDeliveries>> | undefined;
  if (f.send) {
    const publicUrl = f.publicUrl ?? f.send;
    const signing: Signing = f.twilioToken
      ? { kind: "twilio", authToken: f.twilioToken, publicUrl }
      : f.koreSecret
        ? { kind: "kore", secret: f.koreSecret, publicUrl }
        : { kind: "none" };
    delivery = await sendDeliveries({
      url: f.send,
      events: sim.events,
      batchMin: f.batchMin,
      batchMax: f.batchMax,
      signing,
      ...(f.rate !== undefined ? { ratePerSecond: f.rate } : {}),
      concurrency: f.concurrency,
      maxRetries: f.maxRetries,
      seed: f.seed,
      onProgress: (p) =>
        report(
          () =>
            `sent ${p.deliveries} deliveries (${p.events} events, ${Math.round(p.events / elapsed())} ev/s), ${p.retries} retries, ${p.rejected4xx} rejected, ${p.failed} failed`,
        ),
    });
  } else if (f.out) {
    await writeEventsJsonl(f.out, sim.events, (p) =>
      report(
        () =>
          `wrote ${p.events} events (${Math.round(p.bytes / 1e6)} MB, ${Math.round(p.events / elapsed())} ev/s)`,
      ),
    );
  }
  const truth = sim.truth();
  if (f.truth) await writeTruthJson(f.truth, truth);
  if (f.customersCsv) await writeCustomersCsv(f.customersCsv, truth.customers);
  const secs = elapsed();
  const summary: Record<string, unknown> = {
    events: truth.events,
    billingEvents: truth.billingEvents,
    totalBytes: truth.totalBytes,
    customers: f.customers,
    sims: f.sims,
    sessions: truth.sessions,
    duplicates: truth.duplicates,
    lostUpdates: truth.lostUpdates,
    from: new Date(truth.from).toISOString(),
    to: new Date(truth.to).toISOString(),
    seconds: Math.round(secs * 10) / 10,
    eventsPerSecond: Math.round(truth.events / Math.max(secs, 0.001)),
  };
  if (delivery) summary.delivery = delivery;
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (delivery && (delivery.rejectedEvents > 0 || delivery.failedEvents > 0)) {
    process.stderr.write(
      `${delivery.rejectedEvents + delivery.failedEvents} events were not delivered: the truth file overstates what the receiver got\n`,
    );
    process.exitCode = 1;
  }
}
