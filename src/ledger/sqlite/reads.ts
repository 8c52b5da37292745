import type { Db } from "../../db/client.ts";
import type { ReadsPort } from "../reads-port.ts";

export function sqliteReads(_db: Db): ReadsPort {
  return {};
}
