import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type Async, calls, runAsync, runSync, type Steps } from "../../src/ledger/steps.ts";

// A three-step unit of work over a tiny key-value "ledger", driven both ways.
interface KvOps {
  get(key: string): number;
  put(key: string, value: number): void;
  keys(prefix: string): string[];
}
const op = calls<KvOps>();

function* addTo(key: string, n: number): Steps<KvOps, number> {
  const before = yield* op("get", key);
  yield* op("put", key, before + n);
  const all = yield* op("keys", "");
  return all.length;
}

function memory(initial: Record<string, number> = {}) {
  const data = new Map(Object.entries(initial));
  const log: string[] = [];
  const ops: KvOps = {
    get: (key) => {
      log.push(`get ${key}`);
      return data.get(key) ?? 0;
    },
    put: (key, value) => {
      log.push(`put ${key}=${value}`);
      if (value > 100) throw new Error(`${key} would exceed 100`);
      data.set(key, value);
    },
    keys: (prefix) => [...data.keys()].filter((k) => k.startsWith(prefix)),
  };
  const async: Async<KvOps> = {
    get: async (key) => ops.get(key),
    put: async (key, value) => ops.put(key, value),
    keys: async (prefix) => ops.keys(prefix),
  };
  return { data, log, ops, async };
}

describe("the step runner", () => {
  it("runSync feeds each op's result back into the body and returns its result", () => {
    const m = memory({ a: 1 });
    expect(runSync(addTo("b", 5), m.ops)).toBe(2);
    expect(m.data.get("b")).toBe(5);
    expect(m.log).toEqual(["get b", "put b=5"]);
  });

  it("runAsync runs the same body over Promise-returning ops, in the same order", async () => {
    const m = memory({ a: 1 });
    expect(await runAsync(addTo("a", 41), m.async)).toBe(1);
    expect(m.data.get("a")).toBe(42);
    expect(m.log).toEqual(["get a", "put a=42"]);
  });

  it("a throwing step aborts the body: no later step runs and the driver throws", async () => {
    const sync = memory({ a: 90 });
    expect(() => runSync(addTo("a", 20), sync.ops)).toThrow("a would exceed 100");
    expect(sync.log).toEqual(["get a", "put a=110"]);
    const async = memory({ a: 90 });
    await expect(runAsync(addTo("a", 20), async.async)).rejects.toThrow("a would exceed 100");
    expect(async.log).toEqual(["get a", "put a=110"]);
  });

  it("a throwing step inside a SQLite transaction rolls it back", async () => {
    const { openDb } = await import("../../src/db/client.ts");
    const db = openDb(":memory:");
    db.$client.exec("create table kv (k text primary key, v integer not null)");
    const get = db.$client.prepare<[string], { v: number }>("select v from kv where k = ?");
    const put = db.$client.prepare(
      "insert into kv (k, v) values (?, ?) on conflict(k) do update set v = excluded.v",
    );
    const ops: KvOps = {
      get: (k) => get.get(k)?.v ?? 0,
      put: (k, v) => {
        put.run(k, v);
        if (v > 100) throw new Error("too much");
      },
      keys: () => [],
    };
    function* twice(): Steps<KvOps, void> {
      yield* op("put", "x", 1);
      yield* op("put", "y", 500);
    }
    expect(() => db.transaction(() => runSync(twice(), ops), { behavior: "immediate" })).toThrow(
      "too much",
    );
    expect(db.$client.prepare("select count(*) as n from kv").get()).toEqual({ n: 0 });
    db.$client.close();
  });

  it("types each op's arguments and result", () => {
    function* wrong(): Steps<KvOps, void> {
      // @ts-expect-error: put takes a number
      yield* op("put", "a", "1");
      // @ts-expect-error: there is no op "delete"
      yield* op("delete", "a");
      // @ts-expect-error: get takes one argument
      yield* op("get");
      const n = yield* op("get", "a");
      // @ts-expect-error: get returns a number
      const s: string = n;
      void s;
    }
    // Compile-time only: the body is never driven.
    expect(typeof wrong).toBe("function");
    const notAsync: Async<KvOps> = {
      // @ts-expect-error: an async adapter's op must return a Promise
      get: (_k: string) => 1,
      put: async () => {},
      keys: async () => [],
    };
    void notAsync;
  });
});

describe("the SQLite adapter", () => {
  it("has no asynchronous code: nothing may await while a SQLite transaction is open", () => {
    const dir = join(import.meta.dirname, "../../src/ledger/sqlite");
    const files = readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) =>
      f.endsWith(".ts"),
    );
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const code = readFileSync(join(dir, f), "utf8")
        .replace(/\/\*[\s\S]*?\*\//g, "")
        .replace(/\/\/.*$/gm, "");
      // index.ts is the port: it wraps each synchronous call (a whole transaction at most) in a
      // settled Promise, and never awaits or opens a transaction itself.
      const forbidden =
        f === "index.ts" ? /\b(await|then\(|transaction\()/g : /\b(async|await|Promise|then\()\b/g;
      expect({ file: f, found: code.match(forbidden) ?? [] }).toEqual({ file: f, found: [] });
    }
  });
});
