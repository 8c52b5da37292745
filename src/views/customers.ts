import { z } from "zod";
import type { AssignmentsLedger } from "../customers/customers.ts";
import type { Assignment } from "../db/schema.ts";
import { idCursor, iso, listOf, page, pageParams } from "./json.ts";

export const AssignmentParams = z.object({
  customer: z.string().min(1).optional().meta({ description: "only this Stripe customer (cus_…)" }),
  ...pageParams,
});
export const AssignmentItem = z
  .object({
    id: z.number().int(),
    target_type: z.enum(["sim", "iccid", "fleet"]),
    target_id: z.string(),
    customer_id: z.string(),
    effective_from: z.string(),
    created_at: z.string(),
  })
  .meta({ id: "Assignment" });
export type AssignmentItem = z.output<typeof AssignmentItem>;
export const AssignmentList = listOf(AssignmentItem, "AssignmentList");

/** Customer assignments in the order they were made (GET /api/customers, `customers list`). */
export async function assignmentList(
  ledger: AssignmentsLedger,
  p: z.output<typeof AssignmentParams>,
) {
  return assignmentPage(await ledger.assignments.list(), p);
}

/** One page of the assignment list over every assignment (the CLI reads them once for all pages). */
export function assignmentPage(all: readonly Assignment[], p: z.output<typeof AssignmentParams>) {
  const afterId = idCursor(p.starting_after);
  // Ordered by id, the order they were made in, so a page boundary never moves.
  const rows = all
    .filter(
      (a) =>
        (p.customer === undefined || a.customerId === p.customer) &&
        (afterId === undefined || a.id > afterId),
    )
    .sort((a, b) => a.id - b.id)
    .slice(0, p.limit + 1);
  return page(
    rows,
    p.limit,
    (r) => String(r.id),
    (r): AssignmentItem => ({
      id: r.id,
      target_type: r.targetType,
      target_id: r.targetId,
      customer_id: r.customerId,
      effective_from: iso(r.effectiveFrom),
      created_at: iso(r.createdAt),
    }),
  );
}
