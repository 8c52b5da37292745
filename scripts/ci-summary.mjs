// Prints the one line CI reads, "N passed, M failed", last.
//   node scripts/ci-summary.mjs RESULTS.json STATUS [--checks CHECKS.jsonl] [--projects a,b]
// RESULTS.json is vitest's JSON report of `npm test` and STATUS its exit code. A run that crashed
// before writing the report, or exited non-zero with no failed test, counts as one failure.
// The suite runs as vitest projects (vitest.config.ts: sqlite, postgres), the same file in several
// of them; the report names each file's project (ProjectJsonReporter). Every test of every project
// counts; each failed test is named with its project and file; with --projects, a report in
// which one of those projects ran no file at all counts as one failure (a backend never skips
// silently).
// CHECKS.jsonl (written by .ci/run) adds one line per extra check, either
//   {"name": "...", "ok": true|false}                          one check
//   {"name": "...", "vitest": "path/to/report.json", "status": 0}  another suite run (Node 22, 24)
// Each failed check is named above the final line.
import { existsSync, readFileSync } from "node:fs";

const args = process.argv.slice(2);
/** the value after --name, and args without both */
function option(name) {
  const at = args.indexOf(name);
  if (at < 0) return undefined;
  const [value] = args.splice(at, 2).slice(1);
  return value;
}
const checksFile = option("--checks");
const projectsText = option("--projects");
const expectedProjects = projectsText ? projectsText.split(",").filter(Boolean) : [];
const [file, statusText] = args;

/** a file's path relative to the tree it ran in (test/…), for the failure lines */
const shortPath = (p) => {
  const at = String(p).lastIndexOf("/test/");
  return at >= 0 ? String(p).slice(at + 1) : String(p);
};

/**
 * passed/failed tests of one vitest JSON report and the exit code of its run; `names` gets one
 * line per failure: "[project] file > test" (a file that failed to load: "[project] file")
 */
function countReport(path, status, names) {
  let passed = 0;
  let failed = 0;
  if (path && existsSync(path)) {
    try {
      const report = JSON.parse(readFileSync(path, "utf8"));
      passed = report.numPassedTests ?? 0;
      failed = (report.numFailedTests ?? 0) + (report.numRuntimeErrorTestSuites ?? 0);
      const ran = new Map();
      for (const suite of report.testResults ?? []) {
        const project = suite.project ?? "";
        ran.set(project, (ran.get(project) ?? 0) + 1);
        const where = `${project ? `[${project}] ` : ""}${shortPath(suite.name)}`;
        const tests = suite.assertionResults ?? [];
        for (const t of tests) if (t.status === "failed") names.push(`${where} > ${t.fullName}`);
        // A file that failed to load (no tests) or whose hooks failed (no failed test) still
        // fails the run.
        if (suite.status === "failed" && !tests.some((t) => t.status === "failed")) {
          failed++;
          names.push(`${where}: ${String(suite.message || "failed").split("\n")[0]}`);
        }
      }
      // errors outside any test (ProjectJsonReporter records how many)
      if ((report.numUnhandledErrors ?? 0) > 0) {
        failed += report.numUnhandledErrors;
        names.push(`${report.numUnhandledErrors} unhandled errors outside the tests`);
      }
      for (const project of expectedProjects) {
        if ((ran.get(project) ?? 0) > 0) continue;
        failed++;
        names.push(`project ${project} ran no test file`);
      }
      const counts = [...ran.keys()].filter(Boolean).map((project) => {
        const mine = (report.testResults ?? []).filter((s) => s.project === project);
        const tests = mine.flatMap((s) => s.assertionResults ?? []);
        const ok = tests.filter((t) => t.status === "passed").length;
        const bad = tests.filter((t) => t.status === "failed").length;
        return `${project} ${mine.length} files, ${ok} passed, ${bad} failed`;
      });
      if (counts.length > 0) console.log(`${path}: ${counts.join("; ")}`);
    } catch {
      failed++;
      names.push(`unreadable report ${path}`);
    }
  }
  if (status !== 0 && failed === 0) {
    failed = 1;
    names.push(`exit status ${status} with no failed test`);
  }
  return { passed, failed };
}

let passed = 0;
let failed = 0;
const failedNames = [];
if (file !== undefined) {
  const names = [];
  const r = countReport(file, Number(statusText ?? 1), names);
  passed += r.passed;
  failed += r.failed;
  if (r.failed > 0) failedNames.push(`npm test: ${r.failed} failed`);
  for (const n of names) failedNames.push(`npm test: ${n}`);
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
      const names = [];
      const r = countReport(c.vitest, Number(c.status ?? 1), names);
      passed += r.passed;
      failed += r.failed;
      if (r.failed > 0) failedNames.push(`${c.name}: ${r.failed} failed`);
      for (const n of names) failedNames.push(`${c.name}: ${n}`);
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
