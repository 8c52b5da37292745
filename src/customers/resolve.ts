// Pure: which Stripe customer pays for a SIM's usage in a given hour bucket.

export type TargetType = "sim" | "iccid" | "fleet";

export type AssignmentLike = {
  targetType: TargetType;
  customerId: string;
  effectiveFrom: number;
  id: number;
};

function latestInEffect(list: readonly AssignmentLike[], hour: number): AssignmentLike | undefined {
  let best: AssignmentLike | undefined;
  for (const a of list) {
    if (a.effectiveFrom > hour) continue;
    if (
      !best ||
      a.effectiveFrom > best.effectiveFrom ||
      (a.effectiveFrom === best.effectiveFrom && a.id > best.id)
    )
      best = a;
  }
  return best;
}

function earliest(list: readonly AssignmentLike[]): AssignmentLike | undefined {
  let best: AssignmentLike | undefined;
  for (const a of list) {
    if (
      !best ||
      a.effectiveFrom < best.effectiveFrom ||
      (a.effectiveFrom === best.effectiveFrom && a.id < best.id)
    )
      best = a;
  }
  return best;
}

/**
 * The customer for the hour bucket starting at `hour`, given every assignment that can apply to
 * the SIM (its own sim_sid and ICCID ones, and its fleet's):
 * 1. the SIM's own assignment in effect at the start of the hour wins;
 * 2. otherwise its fleet's assignment in effect then;
 * 3. usage from before any assignment took effect goes to the SIM's (else the fleet's) first
 *    assignment, so usage of a SIM that was unmapped is billed once a mapping exists.
 * An assignment is in effect from the first whole hour at or after its effective time: usage is
 * accounted per hour, so the hour in which a re-assignment happens stays with the previous customer.
 */
export function resolveCustomer(
  assignments: readonly AssignmentLike[],
  hour: number,
): string | null {
  const own = assignments.filter((a) => a.targetType !== "fleet");
  const fleet = assignments.filter((a) => a.targetType === "fleet");
  return (
    latestInEffect(own, hour)?.customerId ??
    latestInEffect(fleet, hour)?.customerId ??
    earliest(own)?.customerId ??
    earliest(fleet)?.customerId ??
    null
  );
}

/** Rounds an effective time up to the hour boundary from which it applies. */
export function effectiveHour(t: number): number {
  const h = 3_600_000;
  return Math.ceil(t / h) * h;
}
