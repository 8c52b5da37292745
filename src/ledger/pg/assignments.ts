import type pg from "pg";
import type { AssignmentsPort } from "../assignments-port.ts";

export function pgAssignments(_pool: pg.Pool): AssignmentsPort {
  return {};
}
