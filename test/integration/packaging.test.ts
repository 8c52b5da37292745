// What the package ships and how it starts: `npm pack` contents, the dependency split (nothing the
// compiled code imports is a devDependency), the install-script policy, bin/simmeter.mjs without
// or with a stale dist/, the build without TypeScript, and the CI summary line. .ci/run does the
// real production install (npm ci --omit=dev of the packed files) on every CI run.
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { tempDir } from "../helpers/process.ts";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "../..");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  private?: boolean;
  files?: string[];
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  allowScripts?: Record<string, boolean>;
  engines?: { node?: string };
};
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
  packages: Record<string, { hasInstallScript?: boolean; dev?: boolean; version?: string }>;
};

/** exit status, stdout and stderr of `node ARGS` (never throws on a non-zero exit) */
async function node(args: string[], cwd: string) {
  try {
    const r = await run(process.execPath, args, { cwd, env: { ...process.env } });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { status: err.code ?? 1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)],
  );
}

describe("the npm package", () => {
  it("ships bin/, the compiled dist/ and the migrations, and no tests, scripts or sources", async () => {
    // --ignore-scripts: no prepack build here; `npm test` built dist/ before the suite.
    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: ROOT,
    });
    const [report] = JSON.parse(stdout) as [{ files: { path: string }[] }];
    const files = report.files.map((f) => f.path);
    expect(files, "dist/ is missing: run npm run build").toContain("dist/cli/main.js");
    expect(files).toEqual(
      expect.arrayContaining([
        "package.json",
        "README.md",
        "bin/simmeter.mjs",
        "dist/runtime/worker-thread.js",
        "drizzle/meta/_journal.json",
      ]),
    );
    for (const dir of ["drizzle", "drizzle/pg"]) {
      const migrations = readdirSync(join(ROOT, dir)).filter((f) => f.endsWith(".sql"));
      expect(migrations.length, dir).toBeGreaterThan(0);
      for (const m of migrations) expect(files).toContain(`${dir}/${m}`);
      expect(files).toContain(`${dir}/meta/_journal.json`);
    }
    const stray = files.filter((f) => /^(test|scripts|src|\.ci|data|node_modules)\//.test(f));
    expect(stray).toEqual([]);
    expect(files.filter((f) => /\.(ts|tsx)$/.test(f) && !f.endsWith(".d.ts"))).toEqual([]);
  });

  it("is private, builds nothing at install, and keeps tsx, TypeScript and esbuild out of the runtime dependencies", () => {
    expect(pkg.private).toBe(true);
    for (const hook of ["preinstall", "install", "postinstall", "prepare"]) {
      expect(pkg.scripts[hook], `scripts.${hook}`).toBeUndefined();
    }
    expect(pkg.scripts.build).toBe("node scripts/build.mjs");
    expect(pkg.scripts.prepack).toBe("node scripts/build.mjs");
    for (const dev of ["tsx", "typescript", "esbuild", "vitest"]) {
      expect(pkg.dependencies[dev], dev).toBeUndefined();
    }
    expect(pkg.devDependencies.tsx).toBeDefined();
    expect(lock.packages["node_modules/tsx"]?.dev).toBe(true);
    expect(lock.packages["node_modules/esbuild"]?.dev).toBe(true);
    expect(pkg.engines?.node).toBeTruthy();
  });

  it("states in engines the Node versions CI runs, this one included", () => {
    // engines is a list of caret ranges, one per tested line: ^20.20.0 || ^22.23.0 || ...
    const ranges = (pkg.engines?.node ?? "").split("||").map((r) => r.trim());
    const parse = (v: string) => v.replace(/^[v^]/, "").split(".").map(Number);
    const satisfies = (version: string) =>
      ranges.some((r) => {
        const [maj, min = 0, pat = 0] = parse(r);
        const [vMaj, vMin = 0, vPat = 0] = parse(version);
        expect(r, "a caret range").toMatch(/^\^\d+\.\d+\.\d+$/);
        return vMaj === maj && (vMin > min || (vMin === min && vPat >= pat));
      });
    const ciRun = readFileSync(join(ROOT, ".ci/run"), "utf8");
    const matrix = /CI_NODE_VERSIONS-([\d. ]+)\}/.exec(ciRun)?.[1]?.trim().split(/\s+/) ?? [];
    expect(matrix.length).toBeGreaterThan(0);
    for (const v of [process.version, ...matrix]) expect(satisfies(v), v).toBe(true);
    expect(ranges).toHaveLength(1 + matrix.length);
  });

  it("imports, from the compiled code, only runtime dependencies and Node built-ins", () => {
    const dist = join(ROOT, "dist");
    const runtime = new Set([...Object.keys(pkg.dependencies), ...builtinModules]);
    const unknown: string[] = [];
    for (const file of filesUnder(dist).filter((f) => f.endsWith(".js"))) {
      const code = readFileSync(file, "utf8");
      const specs = [
        // import … from "x" / export … from "x" (statements start a line), import("x"), import "x"
        ...code.matchAll(/^\s*(?:import|export)\s[^;]*?\bfrom\s*["']([^"']+)["']/gm),
        ...code.matchAll(/\bimport\(\s*["']([^"'\s]+)["']\s*\)/g),
        ...code.matchAll(/^\s*import\s*["']([^"']+)["']/gm),
      ].map((m) => m[1] ?? "");
      for (const spec of specs) {
        if (spec.startsWith(".") || spec.startsWith("node:")) continue;
        // a module specifier, not prose that happens to follow "import (" in a string
        if (!/^(@[\w.-]+\/)?[\w.-]+(\/[\w./-]*)?$/.test(spec)) continue;
        const name = spec.startsWith("@")
          ? spec.split("/").slice(0, 2).join("/")
          : (spec.split("/")[0] ?? "");
        if (!runtime.has(name)) unknown.push(`${relative(ROOT, file)}: ${spec}`);
      }
    }
    expect(unknown).toEqual([]);
  });

  it("declares, in allowScripts, every package in the lockfile that has an install script", () => {
    const policy = pkg.allowScripts ?? {};
    const names = Object.keys(policy).map((k) => k.replace(/(?<=.)@.*$/, ""));
    const withScripts = Object.entries(lock.packages)
      .filter(([path, p]) => path !== "" && p.hasInstallScript)
      .map(([path]) => path.replace(/^.*node_modules\//, ""));
    expect(withScripts.length).toBeGreaterThan(0);
    for (const name of new Set(withScripts)) expect(names, name).toContain(name);
    // better-sqlite3 cannot work without its native build; the others are reviewed denials.
    expect(policy["better-sqlite3"]).toBe(true);
  });
});

describe("bin/simmeter.mjs", () => {
  /** a package root with bin/simmeter.mjs and whatever else the test writes into it */
  function fakeRoot(): string {
    const dir = tempDir("simmeter-bin-");
    mkdirSync(join(dir, "bin"));
    cpSync(join(ROOT, "bin/simmeter.mjs"), join(dir, "bin/simmeter.mjs"));
    return dir;
  }
  function writeDist(dir: string): void {
    mkdirSync(join(dir, "dist/cli"), { recursive: true });
    writeFileSync(join(dir, "dist/cli/main.js"), 'process.stdout.write("compiled ran\\n");\n');
    writeFileSync(join(dir, "dist/.build-stamp"), "x\n");
  }

  it("says to run npm run build, and exits 1, when dist/ is missing", async () => {
    const dir = fakeRoot();
    const r = await node([join(dir, "bin/simmeter.mjs"), "--version"], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("dist/ is missing: run npm run build");
    expect(r.stdout).toBe("");
  });

  it("runs dist/ and nothing else, without a word when there are no sources beside it", async () => {
    const dir = fakeRoot();
    writeDist(dir);
    const r = await node([join(dir, "bin/simmeter.mjs")], dir);
    expect(r).toEqual({ status: 0, stdout: "compiled ran\n", stderr: "" });
  });

  it("warns, and still runs dist/, when src/ is newer than the build", async () => {
    const dir = fakeRoot();
    writeDist(dir);
    const old = new Date(Date.now() - 60_000);
    utimesSync(join(dir, "dist/.build-stamp"), old, old);
    mkdirSync(join(dir, "src/cli"), { recursive: true });
    writeFileSync(join(dir, "src/cli/main.ts"), "// edited\n");
    const r = await node([join(dir, "bin/simmeter.mjs")], dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("compiled ran\n");
    expect(r.stderr).toContain("dist/ is older than src/: run npm run build");
  });
});

describe("npm run build", () => {
  it("refuses with what to do, instead of fetching the unrelated npm package `tsc`, when TypeScript is not installed", async () => {
    const dir = tempDir("simmeter-build-");
    mkdirSync(join(dir, "scripts"));
    cpSync(join(ROOT, "scripts/build.mjs"), join(dir, "scripts/build.mjs"));
    writeFileSync(join(dir, "package.json"), '{"name":"x","type":"module"}\n');
    const r = await node([join(dir, "scripts/build.mjs")], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("TypeScript is not installed");
    expect(r.stderr).toContain("npm ci");
    expect(readdirSync(dir).sort()).toEqual(["package.json", "scripts"]);
  });
});

describe("the CI summary line", () => {
  it("adds the extra checks and other suite runs of .ci/run to the tests of npm test", async () => {
    const dir = tempDir("simmeter-ci-");
    const report = (passed: number, failed: number) =>
      JSON.stringify({ numPassedTests: passed, numFailedTests: failed, testResults: [] });
    writeFileSync(join(dir, "main.json"), report(10, 0));
    writeFileSync(join(dir, "node22.json"), report(9, 1));
    const checks = [
      { name: "production install", ok: true },
      { name: "simmeter doctor --json prints valid JSON", ok: false },
      { name: "npm test on Node 22", vitest: join(dir, "node22.json"), status: 1 },
      {
        name: "npm test on Node 24 (timed out, no report)",
        vitest: join(dir, "none.json"),
        status: 124,
      },
    ];
    writeFileSync(join(dir, "checks.jsonl"), checks.map((c) => JSON.stringify(c)).join("\n"));
    const r = await node(
      [
        join(ROOT, "scripts/ci-summary.mjs"),
        join(dir, "main.json"),
        "0",
        "--checks",
        join(dir, "checks.jsonl"),
      ],
      dir,
    );
    const lines = r.stdout.trim().split("\n");
    expect(lines.at(-1)).toBe("20 passed, 3 failed");
    expect(lines).toContain("failed: simmeter doctor --json prints valid JSON");
    expect(r.status).toBe(1);

    const clean = await node(
      [join(ROOT, "scripts/ci-summary.mjs"), join(dir, "main.json"), "0"],
      dir,
    );
    expect(clean).toMatchObject({ status: 0, stdout: "10 passed, 0 failed\n" });
  });
});
