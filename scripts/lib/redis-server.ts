import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type RedisHandle = {
  url: string;
  port: number;
  stop: () => Promise<void>;
  /** Stops the server but keeps its data directory so start() brings the same data back. */
  kill: () => Promise<void>;
  start: () => Promise<void>;
};

/** ports this process has handed out: the kernel may offer a just-closed port again */
const handedOut = new Set<number>();

/**
 * A port free on 127.0.0.1 now, never one this process handed out before (two calls in a row
 * could otherwise get the same port, and the second listener fails with EADDRINUSE).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await probePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no free port that this process has not handed out already (50 tries)");
}

async function probePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr && typeof addr === "object") resolve(addr.port);
        else reject(new Error("no port"));
      });
    });
  });
}

function redisBinary(): string {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  if (probe.error) {
    throw new Error(
      "redis-server is not on PATH. Install it: apt-get update && apt-get install -y redis-server",
    );
  }
  return "redis-server";
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server did not listen on ${port} within ${timeoutMs} ms`);
}

/**
 * Starts a private redis-server (AOF everysec, noeviction) on a free port. persistence: false
 * runs it without AOF, so a restart comes back empty (as a Redis without persistence does).
 */
export async function startRedis(
  opts: { evictionPolicy?: string; persistence?: boolean } = {},
): Promise<RedisHandle> {
  const bin = redisBinary();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "simmeter-redis-"));
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(
      bin,
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        ...(opts.persistence === false
          ? ["--appendonly", "no"]
          : ["--appendonly", "yes", "--appendfsync", "everysec"]),
        "--maxmemory-policy",
        opts.evictionPolicy ?? "noeviction",
        "--save",
        "",
      ],
      { stdio: "ignore" },
    );
    await waitForPort(port, 10_000);
  };
  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once("exit", () => resolve());
      c.kill("SIGTERM");
    });
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    kill,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
