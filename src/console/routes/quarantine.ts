// Quarantine (the list, one event, requeue: confirm then do) and anomalies.
import type { Request, Response } from "express";
import {
  ingestWorkerRunning,
  listQuarantineRows,
  type QuarantineFilter,
  RequeueSelectionError,
} from "../../ingest/requeue.ts";
import { parseUtcTime } from "../../lib/time.ts";
import { CursorError } from "../../views/json.ts";
import {
  AnomalyParams,
  anomalyList,
  ledgerCounts,
  QuarantineParams,
  quarantineItem,
  quarantineList,
} from "../../views/quarantine.ts";
import { previewRequeue, requeue, requeueFlash } from "../actions.ts";
import { CONSOLE_PREFIX } from "../auth.ts";
import { within } from "../deps.ts";
import type { Flash } from "../layout.tsx";
import { AnomaliesPage } from "../pages/anomalies.tsx";
import { QuarantineItemPage, QuarantinePage, RequeueConfirmPage } from "../pages/quarantine.tsx";
import { cursorOf, type Kit, many, one, PageError } from "./kit.ts";

const sinceOf = (v: string): number | undefined => {
  if (!v) return undefined;
  try {
    return parseUtcTime(v, "since");
  } catch (err) {
    throw new PageError(400, (err as Error).message);
  }
};

/** The events a requeue form (or link) selects: row ids, a reason, a time received. */
const selectionOf = (src: Record<string, unknown>) => {
  const ids = many(src.id).map((s) => {
    if (!/^\d{1,15}$/.test(s))
      throw new PageError(400, `${JSON.stringify(s)} is not a quarantine row id`);
    return Number(s);
  });
  const reason = one(src.reason).trim();
  const since = one(src.since).trim();
  const filter: QuarantineFilter = {
    ...(ids.length > 0 ? { ids } : {}),
    ...(reason ? { reason } : {}),
    ...(since ? { since: sinceOf(since) as number } : {}),
  };
  return { selection: { ids, reason, since }, filter };
};

/** A list's parameters, or a 400 page naming the first problem. */
const paramsOr400 = <T>(
  r: { success: true; data: T } | { success: false; error: { issues: { message: string }[] } },
): T => {
  if (!r.success) throw new PageError(400, r.error.issues[0]?.message ?? "bad filter");
  return r.data;
};

export function quarantineRoutes({ router, deps, api, logger, send, redirectWith }: Kit): void {
  const ledger = api.ledger;
  router.get("/quarantine", async (req: Request, res: Response) => {
    const filters = { reason: one(req.query.reason).trim(), since: one(req.query.since).trim() };
    const params = paramsOr400(
      QuarantineParams.safeParse({
        limit: "100",
        ...(filters.reason ? { reason: filters.reason } : {}),
        ...(filters.since ? { since: filters.since } : {}),
        ...cursorOf(req),
      }),
    );
    let list: Awaited<ReturnType<typeof quarantineList>>;
    try {
      list = await quarantineList(ledger, params);
    } catch (err) {
      if (err instanceof CursorError) throw new PageError(400, err.message);
      throw err;
    }
    send(
      req,
      res,
      "Quarantine",
      QuarantinePage({ list, filters, total: (await ledgerCounts(ledger)).quarantined }),
    );
  });

  router.get("/quarantine/requeue", async (req: Request, res: Response) => {
    const { selection, filter } = selectionOf(req.query as Record<string, unknown>);
    let items: Awaited<ReturnType<typeof previewRequeue>> = [];
    let error: string | null = null;
    try {
      items = await previewRequeue(ledger, filter);
    } catch (err) {
      if (!(err instanceof RequeueSelectionError)) throw err;
      error = err.message.replace(
        /--id N…, --reason TEXT, --since TIME/,
        "a selection, a reason or a time",
      );
    }
    const q = deps.queues;
    const workerRunning = q
      ? await within(ingestWorkerRunning(q.ingest), 2000, "Redis").catch(() => null)
      : null;
    send(req, res, "Requeue", (ctx) =>
      RequeueConfirmPage({ items, selection, csrf: ctx.csrf, workerRunning, error }),
    );
  });

  router.post("/quarantine/requeue", async (req: Request, res: Response) => {
    const q = deps.queues;
    if (!q)
      throw new PageError(
        503,
        "This process has no Redis connection: use simmeter quarantine requeue.",
      );
    const { filter } = selectionOf(req.body as Record<string, unknown>);
    let flash: Flash;
    try {
      const r = await requeue(ledger, q, filter, 20_000, api.now);
      logger.info(
        { requeued: r.requeued, counted: r.counted, again: r.quarantined_again },
        "console: quarantined events requeued",
      );
      flash = requeueFlash(r);
    } catch (err) {
      if (!(err instanceof RequeueSelectionError)) throw err;
      flash = { kind: "error", message: err.message };
    }
    redirectWith(res, `${CONSOLE_PREFIX}/quarantine`, flash);
  });

  router.get("/quarantine/:id", async (req: Request, res: Response) => {
    const id = String(req.params.id ?? "");
    if (!/^\d{1,15}$/.test(id)) throw new PageError(404, `no quarantine row ${id}`);
    const [row] = await listQuarantineRows(ledger, { ids: [Number(id)], limit: 1 });
    if (!row) throw new PageError(404, `no quarantine row ${id}`);
    send(req, res, `Quarantine #${id}`, QuarantineItemPage({ q: quarantineItem(row) }));
  });

  router.get("/anomalies", async (req: Request, res: Response) => {
    const kind = one(req.query.kind).trim();
    const since = one(req.query.since).trim();
    const params = paramsOr400(
      AnomalyParams.safeParse({
        limit: "200",
        ...(kind ? { kind } : {}),
        ...(since ? { since } : {}),
        ...cursorOf(req),
      }),
    );
    const list = await anomalyList(ledger, params);
    const kinds = await ledger.reads.anomalyKinds();
    const simOf = await ledger.reads.simsOfSessions(list.data.map((a) => a.session_sid));
    send(req, res, "Anomalies", AnomaliesPage({ list, kind, since, kinds, simOf }));
  });
}
