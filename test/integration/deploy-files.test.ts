// The deployment files (Dockerfile, compose.yaml, .env.example, the systemd unit) against the code
// they deploy: every variable they set is one src/config.ts reads, every command they run is one
// the CLI has, ports and paths agree. No container runs here (no daemon where this was written),
// so this is what checks those files; systemd-analyze verifies the unit where it exists.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, posix, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { envSchema, loadConfig } from "../../src/config.ts";
import { runCli, tempDir } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(join(ROOT, p), "utf8");
const SCHEMA_KEYS = new Set(Object.keys(envSchema.shape));
const shape = envSchema.shape as Record<
  string,
  (typeof envSchema.shape)[keyof typeof envSchema.shape]
>;

/** envSchema's default for a key, as the raw string a deployment file would write */
function defaultOf(key: string): unknown {
  return shape[key]?.safeParse(undefined).data;
}

// ---------------------------------------------------------------------------------------------
// A YAML reader for the subset compose.yaml uses: block maps and sequences, flow sequences of
// scalars, quoted and plain scalars, comments. Anything else (anchors, block scalars, flow maps,
// tags) is refused, so a compose.yaml this cannot read fails the test instead of passing unread.
// (The `yaml` package is not installed; scalars stay strings, as compose reads them for these keys.)

type Yaml = string | null | Yaml[] | { [k: string]: Yaml };
type Line = { indent: number; text: string; no: number };

function stripComment(s: string): string {
  let quote: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === "#" && (i === 0 || s[i - 1] === " ")) return s.slice(0, i).trimEnd();
  }
  return s.trimEnd();
}

function scalar(raw: string, no: number): Yaml {
  const s = raw.trim();
  if (s === "" || s === "~" || s === "null") return null;
  if (s.startsWith('"')) return JSON.parse(s) as string;
  if (s.startsWith("'")) {
    if (!s.endsWith("'")) throw new Error(`line ${no}: unterminated '${s}`);
    return s.slice(1, -1).replaceAll("''", "'");
  }
  if (s.startsWith("[")) {
    if (!s.endsWith("]")) throw new Error(`line ${no}: a flow sequence must fit on one line`);
    const inner = s.slice(1, -1).trim();
    if (inner === "") return [];
    return (inner.match(/"(?:[^"\\]|\\.)*"|'[^']*'|[^,]+/g) ?? [])
      .map((item) => item.trim())
      .filter((item) => item !== "")
      .map((item) => scalar(item, no));
  }
  if (/^[{&*!|>%@`]/.test(s)) throw new Error(`line ${no}: unsupported YAML: ${s}`);
  return s;
}

/** "key: value" → [key, value]; null when the text is not a map entry */
function splitKey(text: string): [string, string] | null {
  const m = /^("[^"]*"|'[^']*'|[^\s"'#][^:]*?):(?:\s+(.*))?$/.exec(text);
  if (!m?.[1]) return null;
  const key = m[1].replace(/^["']|["']$/g, "");
  return [key, m[2] ?? ""];
}

function parseYaml(source: string): Yaml {
  const lines: Line[] = [];
  source.split("\n").forEach((raw, i) => {
    if (raw.includes("\t")) throw new Error(`line ${i + 1}: tab in indentation`);
    const text = stripComment(raw);
    if (text.trim() === "" || text.trim() === "---") return;
    lines.push({ indent: text.length - text.trimStart().length, text: text.trim(), no: i + 1 });
  });
  let pos = 0;
  const isItem = (l: Line) => l.text === "-" || l.text.startsWith("- ");

  function block(indent: number): Yaml {
    const first = lines[pos];
    if (!first || first.indent !== indent) return null;
    return isItem(first) ? seq(indent) : map(indent);
  }
  function seq(indent: number): Yaml[] {
    const out: Yaml[] = [];
    for (let l = lines[pos]; l && l.indent === indent && isItem(l); l = lines[pos]) {
      const content = l.text.slice(1).trim();
      if (content === "") {
        pos++;
        const next = lines[pos];
        out.push(next && next.indent > indent ? block(next.indent) : null);
      } else if (splitKey(content) && !/^["'[]/.test(content)) {
        // "- key: value" opens a map whose entries sit two columns in
        lines[pos] = { indent: indent + 2, text: content, no: l.no };
        out.push(map(indent + 2));
      } else {
        pos++;
        out.push(scalar(content, l.no));
      }
    }
    return out;
  }
  function map(indent: number): { [k: string]: Yaml } {
    const out: { [k: string]: Yaml } = {};
    for (let l = lines[pos]; l && l.indent === indent && !isItem(l); l = lines[pos]) {
      const kv = splitKey(l.text);
      if (!kv) throw new Error(`line ${l.no}: expected "key: value", got ${l.text}`);
      const [key, value] = kv;
      if (key in out) throw new Error(`line ${l.no}: duplicate key ${key}`);
      pos++;
      if (value !== "") out[key] = scalar(value, l.no);
      else {
        const next = lines[pos];
        out[key] = next && next.indent > indent ? block(next.indent) : null;
      }
    }
    return out;
  }
  const doc = block(0);
  const rest = lines[pos];
  if (rest) throw new Error(`line ${rest.no}: unexpected indentation: ${rest.text}`);
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Dockerfile: instructions with continuations joined, grouped by stage.

type Instruction = { op: string; args: string };
type Stage = { name: string; from: string; body: Instruction[] };

function parseDockerfile(source: string): Stage[] {
  const joined = source
    .split("\n")
    .filter((l) => !/^\s*#/.test(l))
    .join("\n")
    .replace(/\\\n/g, " ");
  const stages: Stage[] = [];
  for (const line of joined.split("\n")) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m?.[1] || m[2] === undefined) continue;
    const op = m[1].toUpperCase();
    const args = m[2].trim();
    if (op === "FROM") {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ name: f?.[2] ?? String(stages.length), from: f?.[1] ?? args, body: [] });
    } else stages.at(-1)?.body.push({ op, args });
  }
  return stages;
}

/** words of a shell-ish line, honouring double and single quotes */
function words(s: string): string[] {
  return (s.match(/"(?:[^"\\]|\\.)*"|'[^']*'|\S+/g) ?? []).map((w) =>
    w.startsWith('"') ? (JSON.parse(w) as string) : w.replace(/^'|'$/g, ""),
  );
}

/** KEY=value pairs of an ENV instruction or a systemd Environment= line */
function assignments(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  const ws = words(s);
  if (ws.length >= 2 && !ws[0]?.includes("=")) {
    out[ws[0] ?? ""] = ws.slice(1).join(" "); // legacy "ENV KEY value"
    return out;
  }
  for (const w of ws) {
    const i = w.indexOf("=");
    if (i <= 0) throw new Error(`not an assignment: ${w}`);
    out[w.slice(0, i)] = w.slice(i + 1);
  }
  return out;
}

const dockerfile = parseDockerfile(read("Dockerfile"));
const stage = (name: string) => {
  const s = dockerfile.find((x) => x.name === name);
  if (!s) throw new Error(`Dockerfile has no stage ${name}`);
  return s;
};
/** the stage and the stages it is built FROM, nearest first */
const lineage = (name: string): Stage[] => {
  const s = dockerfile.find((x) => x.name === name);
  return s ? [s, ...lineage(s.from)] : [];
};
const envOf = (name: string) =>
  Object.assign(
    {},
    ...lineage(name)
      .reverse()
      .flatMap((s) => s.body.filter((i) => i.op === "ENV").map((i) => assignments(i.args))),
  ) as Record<string, string>;
const jsonArg = (name: string, op: string) => {
  const i = lineage(name)
    .flatMap((s) => s.body.filter((x) => x.op === op))
    .at(0);
  return i ? (JSON.parse(i.args) as string[]) : [];
};

// ---------------------------------------------------------------------------------------------
// .env.example: active assignments and commented-out ones ("# NAME=value"), by section.

type EnvLine = { key: string; value: string; active: boolean; section: string };
function parseEnvFile(source: string): EnvLine[] {
  const out: EnvLine[] = [];
  let section = "";
  for (const line of source.split("\n")) {
    const header = /^# --- (.*)/.exec(line);
    if (header?.[1]) section = header[1];
    const m = /^(# ?)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m?.[2] !== undefined && m[3] !== undefined) {
      out.push({ key: m[2], value: m[3], active: m[1] === undefined, section });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// systemd unit: sections of (key, value) pairs in order (keys may repeat).

function parseUnit(source: string): Record<string, [string, string][]> {
  const out: Record<string, [string, string][]> = {};
  let section = "";
  for (const raw of source.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec?.[1]) {
      section = sec[1];
      out[section] = [];
      continue;
    }
    const i = line.indexOf("=");
    if (i <= 0) throw new Error(`not a unit line: ${line}`);
    out[section]?.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

/** runs `simmeter ARGS --help`: a real command prints its own usage and exits 0 */
async function expectCliCommand(args: string[]): Promise<void> {
  const r = await runCli([...args, "--help"], {});
  expect(r.stderr, "bin/simmeter.mjs runs dist/: npm run build first").not.toContain(
    "dist/ is missing",
  );
  expect(r.status, `simmeter ${args.join(" ")} --help\n${r.stderr}`).toBe(0);
  expect(r.stdout).toContain(`Usage: simmeter ${args.join(" ")}`);
}

/** `node bin/simmeter.mjs CMD...` (or the image's entrypoint + command) → CMD... */
function simmeterArgs(argv: string[]): string[] {
  const i = argv.findIndex((a) => a.endsWith("bin/simmeter.mjs"));
  if (i < 0) throw new Error(`not a simmeter command: ${argv.join(" ")}`);
  return argv.slice(i + 1);
}

const compose = parseYaml(read("compose.yaml")) as {
  services: Record<string, Record<string, Yaml>>;
  volumes?: Record<string, Yaml>;
};
const services = compose.services;
const app = services.simmeter as {
  build: { context: string; target: string };
  command: string[];
  environment: Record<string, string>;
  env_file: string;
  ports: string[];
  volumes: string[];
  depends_on: Record<string, unknown>;
};
const redisService = services.redis as { command: string[]; image: string; volumes: string[] };
const emulator = services["stripe-emulator"] as {
  profiles: string[];
  build: { target: string };
  command: string[];
  network_mode: string;
};
const envExample = parseEnvFile(read(".env.example"));
const unitText = read("deploy/systemd/simmeter.service");
const unit = parseUnit(unitText);
const unitService = unit.Service ?? [];
const unitValues = (key: string) => unitService.filter(([k]) => k === key).map(([, v]) => v);
const unitEnv = Object.assign({}, ...unitValues("Environment").map(assignments)) as Record<
  string,
  string
>;
const TOKEN = "t".repeat(32);

describe("Dockerfile", () => {
  it("builds in stages: the production stage gets dependencies from an --omit=dev install and only dist/ from the build", () => {
    const runtime = dockerfile.at(-1);
    expect(runtime?.name, "the last stage is the default target").toBe("runtime");
    const ancestry = lineage("runtime").map((s) => s.name);
    // No install in the runtime image's own lineage brings devDependencies (npm -g is npm itself).
    for (const s of lineage("runtime")) {
      for (const i of s.body.filter((x) => x.op === "RUN")) {
        for (const cmd of i.args.split("&&").map((c) => words(c))) {
          if (cmd[0] !== "npm" || !["ci", "install"].includes(cmd[1] ?? "")) continue;
          expect(
            cmd.includes("-g") || cmd.includes("--omit=dev"),
            `stage ${s.name}: ${cmd.join(" ")}`,
          ).toBe(true);
        }
      }
    }
    const copies = (runtime?.body ?? []).filter((i) => i.op === "COPY");
    const fromStages = copies
      .map((c) => /--from=(\S+)\s+(\S+)/.exec(c.args))
      .filter((m) => m !== null)
      .map((m) => ({ stage: m[1] ?? "", path: m[2] ?? "" }));
    expect(fromStages).toEqual(
      expect.arrayContaining([
        { stage: "deps-prod", path: "/app/node_modules" },
        { stage: "dev", path: "/app/dist" },
      ]),
    );
    // From the dev stage (which has devDependencies) only the compiled output.
    for (const c of fromStages) {
      expect(ancestry).not.toContain(c.stage);
      if (c.stage !== "deps-prod") expect(c.path).toBe("/app/dist");
    }
    const prodInstall = stage("deps-prod").body.find((i) => i.op === "RUN")?.args ?? "";
    expect(prodInstall).toMatch(/npm ci .*--omit=dev/);
    expect(prodInstall).toContain("--strict-allow-scripts");
    expect(stage("deps-dev").body.find((i) => i.op === "RUN")?.args).toContain(
      "--strict-allow-scripts",
    );
  });

  it("installs better-sqlite3's build dependencies (python3, make, g++) only in build stages", () => {
    const toolchain = stage("toolchain").body.find((i) => i.op === "RUN")?.args ?? "";
    expect(words(toolchain)).toEqual(expect.arrayContaining(["python3", "make", "g++"]));
    expect(lineage("runtime").map((s) => s.name)).not.toContain("toolchain");
    for (const s of ["deps-dev", "deps-prod"]) {
      expect(lineage(s).map((x) => x.name)).toContain("toolchain");
    }
  });

  it("sets only variables the configuration schema reads, each to a value it accepts", () => {
    for (const s of dockerfile) {
      for (const key of Object.keys(envOf(s.name))) {
        expect(SCHEMA_KEYS, `ENV ${key} in stage ${s.name}`).toContain(key);
      }
    }
    expect(() =>
      loadConfig({ ...envOf("runtime"), ADMIN_TOKEN: TOKEN }, { admin: true }),
    ).not.toThrow();
  });

  it("refuses to start the image without ADMIN_TOKEN, since its admin listener is not on loopback", () => {
    expect(envOf("runtime").ADMIN_HOST).toBe("0.0.0.0");
    expect(() => loadConfig(envOf("runtime"), { admin: true })).toThrow(/ADMIN_TOKEN/);
  });

  it("runs a real simmeter command, exposes PORT and ADMIN_PORT, and keeps the ledger on its volume", async () => {
    const env = envOf("runtime");
    const argv = [...jsonArg("runtime", "ENTRYPOINT"), ...jsonArg("runtime", "CMD")];
    expect(argv.slice(0, 2)).toEqual(["node", "bin/simmeter.mjs"]);
    await expectCliCommand(simmeterArgs(argv));
    const exposed = lineage("runtime")
      .flatMap((s) => s.body.filter((i) => i.op === "EXPOSE"))
      .flatMap((i) => words(i.args));
    expect(exposed).toEqual(expect.arrayContaining([env.PORT, env.ADMIN_PORT]));
    const volumes = lineage("runtime")
      .flatMap((s) => s.body.filter((i) => i.op === "VOLUME"))
      .flatMap((i) => (i.args.startsWith("[") ? (JSON.parse(i.args) as string[]) : words(i.args)));
    expect(volumes.some((v) => env.DATABASE_PATH?.startsWith(`${v}/`))).toBe(true);
    // The health check asks the admin listener.
    const health = lineage("runtime").flatMap((s) => s.body.filter((i) => i.op === "HEALTHCHECK"));
    expect(health.at(0)?.args).toContain("process.env.ADMIN_PORT}/healthz");
  });

  it("copies only files that exist and that .dockerignore lets into the context", () => {
    const ignored = read(".dockerignore")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("!"));
    expect(ignored).toEqual(
      expect.arrayContaining(["node_modules", "dist", ".env", "data", ".git"]),
    );
    for (const s of dockerfile) {
      for (const c of s.body.filter((i) => i.op === "COPY" && !i.args.includes("--from="))) {
        const sources = words(c.args).slice(0, -1);
        for (const src of sources) {
          if (src === ".") continue;
          expect(existsSync(join(ROOT, src)), `COPY ${src}`).toBe(true);
          expect(ignored, `COPY ${src} is excluded by .dockerignore`).not.toContain(src);
        }
      }
    }
    expect(JSON.parse(read("package.json")).scripts.build).toBeDefined();
  });
});

describe("compose.yaml", () => {
  it("sets only variables the configuration schema reads, and interpolates only those", () => {
    for (const [name, svc] of Object.entries(services)) {
      for (const key of Object.keys((svc.environment as Record<string, string>) ?? {})) {
        expect(SCHEMA_KEYS, `services.${name}.environment.${key}`).toContain(key);
      }
    }
    const interpolated = [...read("compose.yaml").matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map(
      (m) => m[1],
    );
    for (const key of interpolated) expect(SCHEMA_KEYS, `\${${key}}`).toContain(key);
    expect(app.env_file).toBe(".env");
  });

  it("runs Redis with AOF (appendfsync everysec) and maxmemory-policy noeviction, on a volume", () => {
    const cmd = redisService.command;
    expect(cmd[0]).toBe("redis-server");
    const opt = (name: string) => cmd[cmd.indexOf(name) + 1];
    expect(opt("--appendonly")).toBe("yes");
    expect(opt("--appendfsync")).toBe("everysec");
    expect(opt("--maxmemory-policy")).toBe("noeviction");
    expect(redisService.volumes.some((v) => v.endsWith(":/data"))).toBe(true);
    // simmeter reaches it by its service name, on Redis's port.
    const url = new URL(app.environment.REDIS_URL ?? "");
    expect(url.hostname).toBe("redis");
    expect(url.port || "6379").toBe("6379");
    expect(app.depends_on).toHaveProperty("redis");
  });

  it("keeps the ledger on a named volume that DATABASE_PATH points into", () => {
    const declared = Object.keys(compose.volumes ?? {});
    const mounts = app.volumes.map((v) => v.split(":"));
    const dbPath = app.environment.DATABASE_PATH ?? "";
    const mount = mounts.find(([, target]) => target && dbPath.startsWith(`${target}/`));
    expect(mount, `a volume mounted above ${dbPath}`).toBeDefined();
    expect(declared).toContain(mount?.[0]);
    expect(posix.isAbsolute(dbPath)).toBe(true);
  });

  it("runs the simmeter image's real CLI command, built from the production stage", async () => {
    expect(app.build.target).toBe("runtime");
    expect(dockerfile.map((s) => s.name)).toContain(app.build.target);
    const argv = [...jsonArg(app.build.target, "ENTRYPOINT"), ...app.command];
    await expectCliCommand(simmeterArgs(argv));
  });

  it("publishes the webhook on PORT and the admin listener on ADMIN_PORT, admin on the host's loopback only", () => {
    const env = app.environment;
    const port = env.PORT ?? String(defaultOf("PORT"));
    const adminPort = env.ADMIN_PORT ?? String(defaultOf("ADMIN_PORT"));
    const published = app.ports.map((p) => {
      const parts = p.split(":");
      return { container: parts.at(-1), host: parts.length === 3 ? parts[0] : "0.0.0.0" };
    });
    expect(published.map((p) => p.container).sort()).toEqual([port, adminPort].sort());
    expect(published.find((p) => p.container === adminPort)?.host).toBe("127.0.0.1");
    // Inside the container both must listen beyond loopback, so the token is required.
    expect(env.HOST).toBe("0.0.0.0");
    expect(env.ADMIN_HOST).toBe("0.0.0.0");
    expect(env.ADMIN_TOKEN).toMatch(/^\$\{ADMIN_TOKEN:\?/);
  });

  it("offers the Stripe emulator only in the opt-in try profile, from the dev stage, reachable at the STRIPE_API_BASE .env.example gives", async () => {
    for (const [name, svc] of Object.entries(services)) {
      if (name !== "stripe-emulator") expect(svc.profiles, name).toBeUndefined();
    }
    expect(emulator.profiles).toEqual(["try"]);
    expect(emulator.build.target).toBe("dev");
    expect(emulator.network_mode).toBe("service:simmeter");
    const tryLines = envExample.filter((l) => l.section.startsWith("trying it"));
    const tryEnv = Object.fromEntries(tryLines.map((l) => [l.key, l.value]));
    const cmd = emulator.command;
    const flag = (name: string) => cmd[cmd.indexOf(name) + 1];
    const base = new URL(tryEnv.STRIPE_API_BASE ?? "");
    expect(base.hostname).toBe("127.0.0.1"); // the shared network namespace
    expect(base.port).toBe(flag("--port"));
    expect(tryEnv.STRIPE_SECRET_KEY).toBe(flag("--api-key"));

    // The command itself, run here (port 0): it starts and listens.
    const script = cmd.find((a) => a.endsWith(".ts")) ?? "";
    const args = cmd
      .slice(cmd.indexOf(script) + 1)
      .map((a, i, all) => (all[i - 1] === "--port" ? "0" : a));
    expect(cmd[0]).toBe("node_modules/.bin/tsx");
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, script), ...args], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      out += d;
    });
    try {
      await expect
        .poll(() => out, { timeout: 20_000, interval: 100 })
        .toContain("Stripe emulator listening on");
      expect(out).toContain(`API key: ${flag("--api-key")}`);
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("with the try lines of .env.example, is a configuration `simmeter start` accepts", () => {
    const tryEnv = Object.fromEntries(
      envExample.filter((l) => l.section.startsWith("trying it")).map((l) => [l.key, l.value]),
    );
    const active = Object.fromEntries(
      envExample.filter((l) => l.active).map((l) => [l.key, l.value]),
    );
    const env = { ...active, ...tryEnv, ...app.environment, ADMIN_TOKEN: TOKEN };
    const c = loadConfig(env, { receiver: true, admin: true, stripe: true });
    expect(c.ALLOW_UNSIGNED).toBe(true);
    expect(c.STRIPE_SECRET_KEY).toMatch(/^sk_test_/);
  });
});

describe(".env.example", () => {
  it("names only variables the configuration schema reads, commented-out ones included", () => {
    expect(envExample.length).toBeGreaterThan(10);
    for (const l of envExample) expect(SCHEMA_KEYS, l.key).toContain(l.key);
  });

  it("shows each commented-out setting at its real default", () => {
    for (const l of envExample) {
      if (l.active || l.section.startsWith("trying it") || defaultOf(l.key) === undefined) continue;
      expect(shape[l.key]?.parse(l.value), `# ${l.key}=${l.value}`).toEqual(defaultOf(l.key));
    }
  });

  it("as copied, with only a token filled in, is a configuration simmeter loads", () => {
    const active = Object.fromEntries(
      envExample.filter((l) => l.active).map((l) => [l.key, l.value]),
    );
    expect(Object.keys(active)).toContain("ADMIN_TOKEN");
    expect(() => loadConfig({ ...active, ADMIN_TOKEN: TOKEN }, { admin: true })).not.toThrow();
  });
});

describe("systemd unit", () => {
  it("keeps the ledger in its StateDirectory under /var/lib", () => {
    const [stateDir] = unitValues("StateDirectory");
    expect(stateDir).toMatch(/^[a-z][a-z0-9-]*$/);
    expect(unitEnv.DATABASE_PATH?.startsWith(`/var/lib/${stateDir}/`)).toBe(true);
    expect(unitValues("User")[0]).not.toBe("root");
  });

  it("sets only variables the configuration schema reads, and loads the rest from an EnvironmentFile", () => {
    for (const key of Object.keys(unitEnv))
      expect(SCHEMA_KEYS, `Environment=${key}`).toContain(key);
    expect(unitValues("EnvironmentFile")).toEqual(["/etc/simmeter/simmeter.env"]);
    // Its admin listener stays on loopback, so no token is needed for it to start.
    expect(() => loadConfig(unitEnv, { admin: true })).not.toThrow();
  });

  it("starts a real simmeter command and allows the graceful shutdown its deadline", async () => {
    const [exec] = unitValues("ExecStart");
    const argv = words(exec ?? "");
    expect(argv[0]).toMatch(/^\/.*\/node$/);
    await expectCliCommand(simmeterArgs(argv));
    const stopSec = Number(unitValues("TimeoutStopSec")[0]);
    expect(stopSec * 1000).toBeGreaterThan(Number(defaultOf("SHUTDOWN_TIMEOUT_MS")));
  });

  it("does not restart on a configuration error, which is exit status 2", async () => {
    expect(unitValues("RestartPreventExitStatus")).toEqual(["2"]);
    const dir = tempDir();
    const r = await runCli(["start"], { PORT: "not-a-port", DATABASE_PATH: join(dir, "x.db") });
    // (the configuration is refused before the database or Redis is touched)
    expect(r.stderr).toContain("PORT=");
    expect(r.status).toBe(2);
  });

  it.skipIf(spawnSync("systemd-analyze", ["--version"]).error !== undefined)(
    "passes systemd-analyze verify without a warning",
    () => {
      // The interpreter path is the one thing that differs between machines.
      const dir = tempDir();
      const file = join(dir, "simmeter.service");
      const node = existsSync("/usr/bin/node") ? "/usr/bin/node" : process.execPath;
      writeFileSync(file, unitText.replace("/usr/bin/node ", `${node} `));
      const r = spawnSync("systemd-analyze", ["verify", file], { encoding: "utf8" });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe("");
      expect(r.status).toBe(0);
    },
  );
});
