import type pg from "pg";
import type { ReadsPort } from "../reads-port.ts";

export function pgReads(_pool: pg.Pool): ReadsPort {
  return {};
}
