import type { SerializedError } from "vitest";
import { defineConfig } from "vitest/config";
import { JsonReporter, type TestModule } from "vitest/node";

// The files that run on PostgreSQL too: each opens its ledger through test/helpers/ledger.ts
// (openTestLedger, testIngest), which SIMMETER_TEST_BACKEND switches. Every file that opens a
// ledger is here except those whose subject is one ledger (docs/design/postgres-ledger.md §6.3):
//  - SQLite itself: sqlite-busy (file locks), steps (the synchronous driver on :memory:),
//    cli-options and config (DATABASE_PATH parsing), deploy-files (the shipped SQLite units),
//    drills/demo (`npm run demo` builds the demo's SQLite ledger, which migrate-ledger copies);
//  - both ledgers side by side, PostgreSQL always: pg-* (differential tests against SQLite),
//    migrate-ledger, cli-doctor-pg, drills/pg-workers.
// The files that open no ledger (signatures, simulate, the emulator, packaging, …) are
// SQLite-project only: running them twice would test nothing new.
const BOTH_BACKENDS = [
  "test/integration/ingest.test.ts",
  "test/integration/ingest-guards.test.ts",
  "test/integration/prune.test.ts",
  "test/unit/event-strictness.test.ts",
  "test/integration/reporting.test.ts",
  "test/integration/report-schedule.test.ts",
  "test/unit/reporter-retry.test.ts",
  "test/integration/customers.test.ts",
  "test/integration/customer-history.test.ts",
  "test/integration/requeue.test.ts",
  "test/integration/worker-commit.test.ts",
  "test/integration/admin-listener.test.ts",
  "test/integration/clock-skew.test.ts",
  "test/integration/billing-periods.property.test.ts",
  "test/integration/receiver.test.ts",
  "test/integration/replay.test.ts",
  "test/integration/replay-strict.test.ts",
  "test/integration/startup.test.ts",
  "test/integration/start-split.test.ts",
  "test/unit/ledger-gauges.test.ts",
  "test/integration/outbox-durability.test.ts",
  "test/integration/report-crash.test.ts",
  "test/integration/report-missing-meter.test.ts",
  "test/integration/billing-periods.test.ts",
  "test/integration/stripe-cli.test.ts",
  "test/integration/billing-cli.test.ts",
  "test/integration/cli-import.test.ts",
  "test/integration/cli-replay.test.ts",
  "test/integration/customers-cli.test.ts",
  "test/integration/cli-doctor.test.ts",
  "test/integration/cli-readonly.test.ts",
  "test/integration/observability.test.ts",
  "test/integration/logs-json.test.ts",
  "test/integration/faults.test.ts",
  "test/unit/plan-resolver.test.ts",
  "test/unit/customer-history.property.test.ts",
  "test/drills/hostile.test.ts",
  "test/drills/kill.test.ts",
  "test/browser/console.test.ts",
];

// Projects do not inherit the root's test options (no `extends: true`: that would also copy
// globalSetup and start one Redis and one PostgreSQL per project). The root's globalSetup runs
// once per run and what it provides (redisUrl, pgAdminUrl) reaches every project.
const shared = {
  testTimeout: 60_000,
  hookTimeout: 60_000,
  pool: "forks",
} as const;

/**
 * vitest's JSON report with each file's project: the same file runs in both projects, and
 * scripts/ci-summary.mjs names a failure by project and file. testResults are in testModules'
 * order (JsonReporter maps them one to one); also numUnhandledErrors.
 */
class ProjectJsonReporter extends JsonReporter {
  private projects: string[] = [];
  private unhandled = 0;
  override async onTestRunEnd(
    testModules: ReadonlyArray<TestModule>,
    unhandledErrors: ReadonlyArray<SerializedError> = [],
  ) {
    this.projects = testModules.map((m) => m.project.name);
    this.unhandled = unhandledErrors.length;
    await super.onTestRunEnd(testModules);
  }
  override async writeReport(report: string) {
    const parsed = JSON.parse(report) as Record<string, unknown> & {
      testResults: Record<string, unknown>[];
    };
    parsed.testResults.forEach((r, i) => {
      r.project = this.projects[i];
    });
    // errors outside any test (vitest exits 1 for them; the standard report has no field)
    parsed.numUnhandledErrors = this.unhandled;
    await super.writeReport(JSON.stringify(parsed));
  }
}

export default defineConfig({
  test: {
    globalSetup: ["test/helpers/global-redis.ts", "test/helpers/global-postgres.ts"],
    // Two shared cores: more parallel files only add contention to the timing-free
    // integration tests; two keeps the whole suite quick and deterministic. Both projects run at
    // once (one sequence.groupOrder) in this one pool of 2.
    maxWorkers: 2,
    reporters: ["default", new ProjectJsonReporter({ outputFile: ".vitest-results.json" })],
    projects: [
      {
        test: {
          ...shared,
          name: "sqlite",
          include: ["test/**/*.test.ts"],
          env: { SIMMETER_TEST_BACKEND: "sqlite" },
        },
      },
      {
        test: {
          ...shared,
          name: "postgres",
          include: BOTH_BACKENDS,
          env: { SIMMETER_TEST_BACKEND: "postgres" },
        },
      },
    ],
  },
});
