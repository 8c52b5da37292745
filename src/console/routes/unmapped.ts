// Unmapped SIMs, and assigning a SIM (ICCID, fleet) to a customer: confirm, then do.
import type { Request, Response } from "express";
import {
  type AssignInput,
  InputError,
  RebillRequired,
  validateAssignment,
} from "../../customers/customers.ts";
import { effectiveHour } from "../../customers/resolve.ts";
import { parseUtcTime } from "../../lib/time.ts";
import { UnmappedParams, unmappedList } from "../../views/usage.ts";
import { assign, previewAssign } from "../actions.ts";
import { CONSOLE_PREFIX } from "../auth.ts";
import { type AssignConfirmData, AssignConfirmPage, UnmappedPage } from "../pages/unmapped.tsx";
import { cursorOf, type Kit, one } from "./kit.ts";

type Assignment = AssignConfirmData & { input: AssignInput | null };

/** The assignment a form names, validated as `simmeter customers assign` does. */
function assignmentOf(src: Record<string, unknown>, now: number): Assignment {
  const t = one(src.target_type);
  const targetType = t === "iccid" || t === "fleet" ? t : "sim";
  const targetId = one(src.target_id).trim();
  const customer = one(src.customer).trim();
  const from = one(src.from).trim();
  const base = {
    targetType,
    targetId,
    customer,
    from,
    effectiveHour: null,
    moves: [],
    unmappedBytes: 0,
  } as const;
  let effectiveFrom: number | undefined;
  if (from) {
    try {
      effectiveFrom = parseUtcTime(from, "from");
    } catch (err) {
      return { ...base, moves: [], problem: (err as Error).message, input: null };
    }
  }
  const input: AssignInput = {
    targetType,
    targetId,
    customerId: customer,
    ...(effectiveFrom !== undefined ? { effectiveFrom } : {}),
  };
  const problem = validateAssignment(input);
  if (problem) return { ...base, moves: [], problem, input: null };
  return {
    ...base,
    moves: [],
    effectiveHour: new Date(effectiveHour(effectiveFrom ?? now)).toISOString(),
    problem: null,
    input,
  };
}

export function unmappedRoutes({ router, api, logger, send, redirectWith }: Kit): void {
  router.get("/unmapped", async (req: Request, res: Response) => {
    const p = UnmappedParams.parse({ limit: 1000, ...cursorOf(req) });
    const list = await unmappedList(api.ledger, p);
    const customers = (await api.ledger.customers.billed()).sort();
    send(req, res, "Unmapped SIMs", UnmappedPage({ list, customers }));
  });

  const confirm = (req: Request, res: Response, d: Assignment, status: number) =>
    send(req, res, "Assign", (ctx) => AssignConfirmPage({ d, csrf: ctx.csrf }), status);

  router.get("/assign", async (req: Request, res: Response) => {
    const now = api.now();
    const d = assignmentOf(req.query as Record<string, unknown>, now);
    if (d.input) {
      // What the assignment would move and bill, computed without writing it.
      try {
        const p = await previewAssign(api.ledger, d.input, now);
        d.moves = p.moves;
        d.unmappedBytes = p.unmappedBytes;
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        d.problem = err.message;
      }
    }
    confirm(req, res, d, d.problem ? 400 : 200);
  });

  router.post("/assign", async (req: Request, res: Response) => {
    const now = api.now();
    const body = req.body as Record<string, unknown>;
    const d = assignmentOf(body, now);
    if (!d.input) {
      confirm(req, res, d, 400);
      return;
    }
    const rebill = one(body.rebill) === "1";
    try {
      const { assignment: a, unmappedBilled } = await assign(api.ledger, d.input, now, rebill);
      const billed = Math.max(0, unmappedBilled);
      logger.info(
        {
          target: `${a.targetType}:${a.targetId}`,
          customer: a.customerId,
          rebill,
          unmappedBilled: billed,
        },
        "console: customer assigned",
      );
      const to =
        a.targetType === "sim"
          ? `${CONSOLE_PREFIX}/sims/${a.targetId}`
          : `${CONSOLE_PREFIX}/customers/${a.customerId}`;
      redirectWith(res, to, {
        kind: "ok",
        message: `Assigned ${a.targetType} ${a.targetId} to ${a.customerId} from ${new Date(a.effectiveFrom).toISOString()}.`,
        details: [
          `${billed.toLocaleString("en-US")} bytes of unmapped usage are now billed to ${a.customerId}; the reporter sends them on its next run.`,
          ...(rebill
            ? [
                "Re-billed: the reporter sends the old customer a negative correction and the new one the bytes.",
              ]
            : []),
        ],
      });
    } catch (err) {
      if (err instanceof RebillRequired) {
        d.moves = err.moves;
        confirm(req, res, d, 409);
        return;
      }
      if (err instanceof InputError) {
        d.problem = err.message;
        confirm(req, res, d, 400);
        return;
      }
      throw err;
    }
  });
}
