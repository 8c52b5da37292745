// Prints the one line CI reads, "N passed, M failed", last.
//   node scripts/ci-summary.mjs RESULTS.json STATUS [--checks CHECKS.jsonl]
// RESULTS.json is vitest's JSON report of `npm test` and STATUS its exit code. A run that crashed
// before writing the report, or exited non-zero with no failed test, counts as one failure.
// CHECKS.jsonl (written by .ci/run) adds one line per extra check, either
//   {"name": "...", "ok": true|false}                          one check
//   {"name": "...", "vitest": "path/to/report.json", "status": 0}  another suite run (Node 22, 24)
// Each failed check is named above the final line.
import { existsSync, readFileSync } from "node:fs";

const args = process.argv.slice(2);
const at = args.indexOf("--checks");
const checksFile = at >= 0 ? args[at + 1] : undefined;
const [file, statusText] = at >= 0 ? args.slice(0, at) : args;

/** passed/failed tests of one vitest JSON report and the exit code of its run */
function countReport(path, status) {
  let passed = 0;
  let failed = 0;
  if (path && existsSync(path)) {
    try {
      const report = JSON.parse(readFileSync(path, "utf8"));
      passed = report.numPassedTests ?? 0;
      failed = (report.numFailedTests ?? 0) + (report.numRuntimeErrorTestSuites ?? 0);
      // Files that failed to load have no tests but still fail the run.
      for (const suite of report.testResults ?? []) {
        if (suite.status === "failed" && (suite.assertionResults ?? []).length === 0) failed++;
      }
    } catch {
      failed++;
    }
  }
  if (status !== 0 && failed === 0) failed = 1;
  return { passed, failed };
}

let passed = 0;
let failed = 0;
const failedNames = [];
if (file !== undefined) {
  const r = countReport(file, Number(statusText ?? 1));
  passed += r.passed;
  failed += r.failed;
  if (r.failed > 0) failedNames.push(`npm test: ${r.failed} failed`);
}
if (checksFile !== undefined) {
  const lines = existsSync(checksFile) ? readFileSync(checksFile, "utf8").split("\n") : [];
  for (const line of lines) {
    if (line.trim() === "") continue;
    let c;
    try {
      c = JSON.parse(line);
    } catch {
      failed++;
      failedNames.push(`unreadable check line: ${line}`);
      continue;
    }
    if (typeof c.vitest === "string") {
      const r = countReport(c.vitest, Number(c.status ?? 1));
      passed += r.passed;
      failed += r.failed;
      if (r.failed > 0) failedNames.push(`${c.name}: ${r.failed} failed`);
    } else if (c.ok === true) {
      passed++;
    } else {
      failed++;
      failedNames.push(String(c.name));
    }
  }
}
for (const name of failedNames) console.log(`failed: ${name}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
