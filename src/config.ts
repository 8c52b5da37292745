import { z } from "zod";
import { redactUrl } from "./lib/redact-url.ts";

// Parsed once at start-up. A wrong value stops the process with a message that names the
// variable and the fix; secrets never get defaults and are never logged (see redactedConfig).

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"])
  .transform((v) => v === "true" || v === "1" || v === "yes");

const list = z
  .string()
  .transform((v) =>
    v
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  )
  .pipe(z.array(z.string()).min(1, "must hold at least one non-empty value"));

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const basicAuth = z
  .string()
  .regex(/^[^:]+:.+$/, "must be user:password")
  .transform((v) => {
    const i = v.indexOf(":");
    return { user: v.slice(0, i), password: v.slice(i + 1) };
  });

export const envSchema = z.object({
  PORT: intFrom(0, 65535).default(8080),
  HOST: z.string().min(1).default("0.0.0.0"),
  /** the admin listener (/healthz, /readyz, /metrics, /api): loopback unless ADMIN_TOKEN is set */
  ADMIN_HOST: z.string().min(1).default("127.0.0.1"),
  ADMIN_PORT: intFrom(0, 65535).default(8081),
  ADMIN_TOKEN: z
    .string()
    .min(24, "must be at least 24 characters (e.g. openssl rand -hex 32)")
    .regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces")
    .optional(),
  PUBLIC_URL: z
    .url({ protocol: /^https?$/ })
    .optional()
    .describe("the sink destination URL exactly as configured at Twilio/KORE"),
  TWILIO_AUTH_TOKEN: list.optional(),
  KORE_WEBHOOK_SECRET: list.optional(),
  BASIC_AUTH: basicAuth.optional(),
  ALLOW_UNSIGNED: bool.default(false),
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).default("redis://127.0.0.1:6379"),
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_{}-]+$/, "letters, digits, _ - { } only")
    .default("simmeter"),
  DATABASE_PATH: z.string().min(1).default("./data/simmeter.db"),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\/\S+$/, "must be a postgres:// or postgresql:// URL")
    .optional()
    .describe("a PostgreSQL ledger instead of the SQLite file at DATABASE_PATH"),
  PG_POOL_MAX: intFrom(1, 1000).optional(),
  PG_STATEMENT_TIMEOUT_MS: intFrom(0, 86_400_000).default(30_000),
  PG_LOCK_TIMEOUT_MS: intFrom(0, 86_400_000).default(10_000),
  PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: intFrom(0, 86_400_000).default(60_000),
  PG_CONNECT_TIMEOUT_MS: intFrom(100, 600_000).default(5_000),
  BILLING_MODE: z.enum(["realtime", "ended-only"]).default("realtime"),
  ATTRIBUTION: z.enum(["end", "prorate"]).default("end"),
  RETENTION_DAYS: intFrom(35, 100_000).default(40),
  MAX_BYTES_PER_SECOND: intFrom(1, Number.MAX_SAFE_INTEGER).default(250_000_000),
  BODY_LIMIT_BYTES: intFrom(10 * 1024 * 1024, 1024 * 1024 * 1024).default(10 * 1024 * 1024),
  BATCH_MAX_EVENTS: intFrom(1, 100_000).default(2000),
  WORKER_COMMIT_JOBS: intFrom(1, 256).default(8),
  WORKER_LOCK_MS: intFrom(1000, 600_000).default(30_000),
  WORKER_STALLED_INTERVAL_MS: intFrom(500, 600_000).default(30_000),
  SHUTDOWN_TIMEOUT_MS: intFrom(100, 600_000).default(10_000),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  STRIPE_SECRET_KEY: z
    .string()
    .regex(/^(sk|rk)_(test|live)_/, "must be a Stripe secret or restricted key (sk_... or rk_...)")
    .optional(),
  STRIPE_API_BASE: z.url({ protocol: /^https?$/ }).optional(),
  STRIPE_METER_EVENT_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,100}$/)
    .default("supersim_data_bytes"),
  STRIPE_TIMEOUT_MS: intFrom(100, 120_000).default(20_000),
  REPORT_INTERVAL_SECONDS: intFrom(1, 86_400).default(300),
  REPORT_CONCURRENCY: intFrom(1, 64).default(4),
  /** the Stripe account's invoice finalization grace period (Dashboard; Stripe's default 1 h, max 72 h) */
  INVOICE_GRACE_SECONDS: intFrom(0, 72 * 3600).default(3600),
  /** a previous period's draft invoice is only used when it finalizes at least this long after planning */
  INVOICE_MARGIN_SECONDS: intFrom(0, 86_400).default(600),
  SUBSCRIPTION_REFRESH_SECONDS: intFrom(10, 86_400).default(300),
});

/** Variables whose meaning changed: refused with the replacement rather than silently ignored. */
const RETIRED: Record<string, string> = {
  LATE_USAGE_GRACE_SECONDS:
    "was the calendar-month late-usage rule, which is gone: usage now follows each customer's own subscription period. Set INVOICE_GRACE_SECONDS to your Stripe account's invoice finalization grace period instead (default 3600)",
};

export type Config = z.infer<typeof envSchema>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

export type ConfigNeeds = {
  /** the receiver needs a way to authenticate deliveries */
  receiver?: boolean;
  /** the reporter needs a Stripe key */
  stripe?: boolean;
  /** the process serves the admin listener (every role: start, serve, work) */
  admin?: boolean;
};

/** Names and literal addresses that only the local machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Parses the environment; throws ConfigError naming each bad variable and the fix. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, needs: ConfigNeeds = {}): Config {
  // Empty strings mean "unset": shells and .env files produce them for blank lines.
  const cleaned: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== "") cleaned[key] = v;
  }
  const retired = Object.keys(RETIRED).filter((k) => env[k] !== undefined && env[k] !== "");
  if (retired.length > 0) {
    throw new ConfigError(
      `invalid configuration:\n${retired.map((k) => `  ${k}: ${RETIRED[k]}`).join("\n")}`,
    );
  }
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const name = String(i.path[0] ?? "?");
      const value = cleaned[name];
      const shown = isSecret(name)
        ? "(hidden)"
        : JSON.stringify(name === "DATABASE_URL" && value ? redactUrl(value) : value);
      return `  ${name}=${shown}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  const config = parsed.data;
  if (config.DATABASE_URL && cleaned.DATABASE_PATH) {
    throw new ConfigError(
      "DATABASE_URL and DATABASE_PATH are both set: the ledger is either PostgreSQL (DATABASE_URL) " +
        "or the SQLite file at DATABASE_PATH. Unset one of them; to move a SQLite ledger to " +
        "PostgreSQL run simmeter migrate-ledger --from sqlite:PATH --to postgres://…",
    );
  }
  if (needs.receiver) {
    const hasSecret = Boolean(config.TWILIO_AUTH_TOKEN || config.KORE_WEBHOOK_SECRET);
    if (!hasSecret && !config.ALLOW_UNSIGNED) {
      throw new ConfigError(
        "no way to authenticate deliveries: set TWILIO_AUTH_TOKEN (Twilio Event Streams) and/or " +
          "KORE_WEBHOOK_SECRET (KORE Event Streams). For local development only, ALLOW_UNSIGNED=true " +
          "accepts unsigned requests.",
      );
    }
    if (config.TWILIO_AUTH_TOKEN && !config.PUBLIC_URL) {
      throw new ConfigError(
        "PUBLIC_URL is required with TWILIO_AUTH_TOKEN: set it to the sink destination URL exactly " +
          "as configured at Twilio (e.g. https://billing.example.com/webhooks/event-streams); the " +
          "signature covers it.",
      );
    }
    if (config.KORE_WEBHOOK_SECRET && !config.PUBLIC_URL) {
      throw new ConfigError(
        "PUBLIC_URL is required with KORE_WEBHOOK_SECRET: set it to the callback URL configured at " +
          "KORE; the kore-signature covers it.",
      );
    }
  }
  if (config.ALLOW_UNSIGNED && /^(sk|rk)_live_/.test(config.STRIPE_SECRET_KEY ?? "")) {
    throw new ConfigError(
      "ALLOW_UNSIGNED=true with a live Stripe key: anyone who can reach the webhook could bill your " +
        "customers. Unset ALLOW_UNSIGNED and set TWILIO_AUTH_TOKEN or KORE_WEBHOOK_SECRET, or use " +
        "an sk_test_ key for development.",
    );
  }
  if (needs.admin && !isLoopback(config.ADMIN_HOST) && !config.ADMIN_TOKEN) {
    throw new ConfigError(
      `ADMIN_HOST=${config.ADMIN_HOST} exposes per-SIM usage, metrics and the operator API beyond ` +
        "this machine: set ADMIN_TOKEN (at least 24 characters, e.g. `openssl rand -hex 32`); " +
        "clients send it as `Authorization: Bearer <token>`. Or keep ADMIN_HOST=127.0.0.1.",
    );
  }
  if (needs.stripe && !config.STRIPE_SECRET_KEY) {
    throw new ConfigError(
      "STRIPE_SECRET_KEY is required for reporting: set it to a Stripe secret key (sk_live_… or " +
        "sk_test_…) with write access to Billing Meters.",
    );
  }
  return config;
}

const SECRET_NAMES = new Set([
  "ADMIN_TOKEN",
  "TWILIO_AUTH_TOKEN",
  "KORE_WEBHOOK_SECRET",
  "BASIC_AUTH",
  "STRIPE_SECRET_KEY",
]);

function isSecret(name: string): boolean {
  return SECRET_NAMES.has(name);
}

/** The config with secrets replaced, safe to log. */
export function redactedConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (k === "DATABASE_URL" && typeof v === "string") out[k] = redactUrl(v);
    else out[k] = isSecret(k) && v !== undefined ? "(set)" : v;
  }
  return out;
}
