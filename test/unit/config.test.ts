import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, redactedConfig } from "../../src/config.ts";

describe("configuration from the environment", () => {
  it("has sane defaults for everything that is not a secret", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      PORT: 8080,
      REDIS_URL: "redis://127.0.0.1:6379",
      DATABASE_PATH: "./data/simmeter.db",
      BILLING_MODE: "realtime",
      ATTRIBUTION: "end",
      ALLOW_UNSIGNED: false,
      RETENTION_DAYS: 40,
      REPORT_INTERVAL_SECONDS: 300,
      STRIPE_METER_EVENT_NAME: "supersim_data_bytes",
      INVOICE_GRACE_SECONDS: 3600,
      INVOICE_MARGIN_SECONDS: 600,
      SUBSCRIPTION_REFRESH_SECONDS: 300,
    });
    expect(c.TWILIO_AUTH_TOKEN).toBeUndefined();
  });

  it.each([
    ["PORT", "eighty"],
    ["BILLING_MODE", "monthly"],
    ["ATTRIBUTION", "start"],
    ["REDIS_URL", "http://localhost:6379"],
    ["RETENTION_DAYS", "7"],
    ["ALLOW_UNSIGNED", "maybe"],
    ["STRIPE_SECRET_KEY", "pk_test_123"],
    ["PUBLIC_URL", "ftp://example.com/hook"],
  ])("a bad %s stops start-up with a message naming it", (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrowError(new RegExp(`${name}=`));
  });

  it("never prints a secret in an error or in the logged config", () => {
    let message = "";
    try {
      loadConfig({ STRIPE_SECRET_KEY: "pk_live_supersecret" });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain("STRIPE_SECRET_KEY=(hidden)");
    expect(message).not.toContain("supersecret");
    const c = loadConfig(
      { TWILIO_AUTH_TOKEN: "tok1,tok2", PUBLIC_URL: "https://x.example/h" },
      { receiver: true },
    );
    expect(JSON.stringify(redactedConfig(c))).not.toContain("tok1");
  });

  it("accepts several comma-separated tokens for a rotation", () => {
    const c = loadConfig(
      {
        TWILIO_AUTH_TOKEN: " old , new ",
        KORE_WEBHOOK_SECRET: "k1,k2",
        PUBLIC_URL: "https://x.example/h",
      },
      { receiver: true },
    );
    expect(c.TWILIO_AUTH_TOKEN).toEqual(["old", "new"]);
    expect(c.KORE_WEBHOOK_SECRET).toEqual(["k1", "k2"]);
  });

  it.each([
    [{}, /TWILIO_AUTH_TOKEN.*KORE_WEBHOOK_SECRET.*ALLOW_UNSIGNED/s],
    [{ TWILIO_AUTH_TOKEN: "t" }, /PUBLIC_URL is required with TWILIO_AUTH_TOKEN/],
    [{ KORE_WEBHOOK_SECRET: "k" }, /PUBLIC_URL is required with KORE_WEBHOOK_SECRET/],
  ])(
    "the receiver refuses to start without a way to authenticate deliveries (%j)",
    (env, message) => {
      expect(() => loadConfig(env, { receiver: true })).toThrow(ConfigError);
      expect(() => loadConfig(env, { receiver: true })).toThrowError(message);
    },
  );

  it("ALLOW_UNSIGNED=true lets a development receiver start without secrets", () => {
    expect(loadConfig({ ALLOW_UNSIGNED: "true" }, { receiver: true }).ALLOW_UNSIGNED).toBe(true);
  });

  it("refuses LATE_USAGE_GRACE_SECONDS, whose calendar-month rule is gone, naming its replacement", () => {
    expect(() => loadConfig({ LATE_USAGE_GRACE_SECONDS: "3600" })).toThrow(ConfigError);
    expect(() => loadConfig({ LATE_USAGE_GRACE_SECONDS: "3600" })).toThrow(
      /LATE_USAGE_GRACE_SECONDS: .*INVOICE_GRACE_SECONDS/,
    );
    expect(loadConfig({ INVOICE_GRACE_SECONDS: "7200" }).INVOICE_GRACE_SECONDS).toBe(7200);
    expect(() => loadConfig({ INVOICE_GRACE_SECONDS: String(73 * 3600) })).toThrow(
      /INVOICE_GRACE_SECONDS/,
    );
  });

  it("empty values count as unset (blank lines in .env files)", () => {
    expect(loadConfig({ PORT: "", BILLING_MODE: "" })).toMatchObject({
      PORT: 8080,
      BILLING_MODE: "realtime",
    });
  });
});

describe("the ledger's configuration", () => {
  const URL_WITH_PASSWORD = "postgres://simmeter:hunter2-secret@db.internal:5432/ledger";

  it("selects PostgreSQL with DATABASE_URL and keeps SQLite's DATABASE_PATH default otherwise", () => {
    expect(loadConfig({}).DATABASE_URL).toBeUndefined();
    const c = loadConfig({ DATABASE_URL: URL_WITH_PASSWORD });
    expect(c.DATABASE_URL).toBe(URL_WITH_PASSWORD);
    expect(c.PG_STATEMENT_TIMEOUT_MS).toBe(30_000);
    expect(c.PG_LOCK_TIMEOUT_MS).toBe(10_000);
    expect(c.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS).toBe(60_000);
    expect(c.PG_CONNECT_TIMEOUT_MS).toBe(5_000);
    expect(c.PG_POOL_MAX).toBeUndefined();
    expect(loadConfig({ DATABASE_URL: "postgresql://h/db", PG_POOL_MAX: "3" }).PG_POOL_MAX).toBe(3);
  });

  it("refuses DATABASE_URL beside DATABASE_PATH, naming both and migrate-ledger", () => {
    expect(() =>
      loadConfig({ DATABASE_URL: URL_WITH_PASSWORD, DATABASE_PATH: "./data/x.db" }),
    ).toThrow(/DATABASE_URL and DATABASE_PATH are both set.*migrate-ledger/s);
  });

  it("refuses a URL that is not PostgreSQL's without printing its password", () => {
    let message = "";
    try {
      loadConfig({ DATABASE_URL: "mysql://root:hunter2-secret@db/x" });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toMatch(/DATABASE_URL=.*must be a postgres:\/\/ or postgresql:\/\/ URL/);
    expect(message).not.toContain("hunter2-secret");
  });

  it("logs DATABASE_URL with its password replaced", () => {
    const shown = redactedConfig(loadConfig({ DATABASE_URL: URL_WITH_PASSWORD }));
    expect(shown.DATABASE_URL).toBe("postgres://simmeter:***@db.internal:5432/ledger");
    expect(JSON.stringify(shown)).not.toContain("hunter2-secret");
  });

  it("refuses pool settings out of range", () => {
    expect(() => loadConfig({ PG_POOL_MAX: "0" })).toThrow(/PG_POOL_MAX/);
    expect(() => loadConfig({ PG_CONNECT_TIMEOUT_MS: "5" })).toThrow(/PG_CONNECT_TIMEOUT_MS/);
  });
});
