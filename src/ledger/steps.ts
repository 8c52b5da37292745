// One body, two drivers. A unit of work is written once as a generator that yields typed requests
// ({ op, args }) and receives each op's result; runSync drives it with synchronous ops inside a
// SQLite transaction (nothing can interleave: no await while the transaction is open), runAsync
// with Promise-returning ops inside BEGIN … COMMIT on PostgreSQL. A throw in an op is thrown back
// from the driver, which aborts the caller's transaction.

type Fn = (...a: never[]) => unknown;
type ArgsOf<F> = F extends (...a: infer A) => unknown ? A : never;
type ResultOf<F> = F extends (...a: never[]) => infer T ? T : never;

/** One yielded step: an op's name and its arguments, typed together. */
export type Request<Ops> = { [K in keyof Ops]: { op: K; args: ArgsOf<Ops[K]> } }[keyof Ops];
export type Steps<Ops, R> = Generator<Request<Ops>, R, unknown>;
/** The same ops, each returning a Promise of its result (the asynchronous adapter's shape). */
export type Async<Ops> = { [K in keyof Ops]: (...a: ArgsOf<Ops[K]>) => Promise<ResultOf<Ops[K]>> };

/** const op = calls<IngestOps>(); … const fresh = yield* op("claimEvents", seen);  (typed both ways) */
export function calls<Ops extends Record<keyof Ops, Fn>>() {
  return function* <K extends keyof Ops>(
    op: K,
    ...args: ArgsOf<Ops[K]>
  ): Generator<Request<Ops>, ResultOf<Ops[K]>, unknown> {
    return (yield { op, args } as Request<Ops>) as ResultOf<Ops[K]>;
  };
}

export function runSync<Ops, R>(steps: Steps<Ops, R>, ops: Ops): R {
  let r = steps.next();
  while (!r.done)
    r = steps.next((ops[r.value.op] as Fn).apply(ops, r.value.args as unknown as never[]));
  return r.value;
}

export async function runAsync<Ops, R>(steps: Steps<Ops, R>, ops: Async<Ops>): Promise<R> {
  let r = steps.next();
  while (!r.done)
    r = steps.next(await (ops[r.value.op] as Fn).apply(ops, r.value.args as unknown as never[]));
  return r.value;
}
