import type { SerializedError } from "vitest";
import { defineConfig } from "vitest/config";
import { JsonReporter, type TestModule } from "vitest/node";

// The files that run on PostgreSQL too: each opens its ledger through test/helpers/ledger.ts
// (openTestLedger, testIngest), which SIMMETER_TEST_BACKEND switches. This list grows until it
// covers every file that opens a ledger (docs/design/postgres-ledger.md §6.3); the files that
// never open one (signatures, config, simulate, …) stay SQLite-project only.
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
