// What every doctor check shares. A check is a function in one of the modules of this folder that
// takes what it needs (the config, an open database, a Redis connection, a Stripe client) and the
// run's `add`, and adds one or more results under its own names. It never throws for its own
// failure: it adds a "fail" naming the cause, so the checks after it still run. The order the
// checks run (and print) in is runDoctor's, in ../doctor.ts.

export type CheckStatus = "ok" | "warn" | "fail";

export type Check = {
  name: string;
  status: CheckStatus;
  detail: string;
  /** Fields only the JSON output carries, beside name, status and detail. */
  extra: Record<string, unknown>;
};

/** Records one result of the run. */
export type Add = (
  check: string,
  result: CheckStatus,
  detail?: string,
  extra?: Record<string, unknown>,
) => void;
