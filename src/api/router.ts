import { type Request, type Response, Router } from "express";
import type { z } from "zod";
import { CursorError } from "../views/json.ts";
import { apiError } from "./error.ts";
import { type ApiContext, NotFound, ROUTES } from "./routes.ts";

/** express path for an OpenAPI path template: /api/quarantine/{id} → /api/quarantine/:id */
const expressPath = (p: string) => p.replace(/\{(\w+)\}/g, ":$1");

export { apiError };

function firstIssue(e: z.ZodError): { message: string; param: string } {
  const i = e.issues[0];
  const param = String(i?.path[0] ?? "");
  return { message: `${param}: ${i?.message ?? "invalid"}`, param };
}

/** A single value per query parameter: ?a=1&a=2 is refused rather than silently picking one. */
function flatQuery(q: Request["query"]): { values: Record<string, string> } | { repeated: string } {
  const values: Record<string, string> = {};
  for (const [k, v] of Object.entries(q)) {
    if (typeof v !== "string") return { repeated: k };
    values[k] = v;
  }
  return { values };
}

/** Serves ROUTES: validates query and path with their schemas, answers the view's JSON. */
export function apiRouter(ctx: ApiContext): Router {
  const router = Router();
  for (const r of ROUTES) {
    router.get(expressPath(r.path), async (req: Request, res: Response) => {
      const flat = flatQuery(req.query);
      if ("repeated" in flat) {
        apiError(res, 400, "invalid_parameter", `${flat.repeated}: give it once`, flat.repeated);
        return;
      }
      const q = flat.values;
      const unknown = Object.keys(q).filter((k) => !(k in r.query.shape));
      if (unknown.length > 0) {
        apiError(
          res,
          400,
          "invalid_parameter",
          `unknown parameter ${unknown[0]}; this endpoint takes ${Object.keys(r.query.shape).join(", ") || "none"}`,
          unknown[0],
        );
        return;
      }
      const query = r.query.safeParse(q);
      if (!query.success) {
        const i = firstIssue(query.error);
        apiError(res, 400, "invalid_parameter", i.message, i.param);
        return;
      }
      let params: Record<string, unknown> = query.data;
      if (r.path_params) {
        const path = r.path_params.safeParse(req.params);
        if (!path.success) {
          const i = firstIssue(path.error);
          apiError(res, 404, "not_found", i.message, i.param);
          return;
        }
        params = { ...params, ...path.data };
      }
      try {
        res.json(await r.handler(ctx, params));
      } catch (err) {
        if (err instanceof CursorError)
          apiError(res, 400, "invalid_parameter", err.message, "starting_after");
        else if (err instanceof NotFound) apiError(res, 404, "not_found", err.message);
        else throw err;
      }
    });
  }
  return router;
}
