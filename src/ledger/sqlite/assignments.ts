import type { Db } from "../../db/client.ts";
import type { AssignmentsPort } from "../assignments-port.ts";

export function sqliteAssignments(_db: Db): AssignmentsPort {
  return {};
}
