import type { Express, Request, Response } from "express";
import type { Db } from "../db/client.ts";
import { type Granularity, parseTime, queryUsage } from "./query.ts";

const GRANULARITIES = new Set(["hour", "day", "month", "total"]);

/** GET /api/usage?sim=HS…&from=…&to=…&granularity=hour|day|month|total */
export function mountUsageApi(app: Express, db: Db): void {
  app.get("/api/usage", (req: Request, res: Response) => {
    try {
      const q = req.query;
      const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
      const g = str(q.granularity) ?? "hour";
      if (!GRANULARITIES.has(g)) throw new Error("granularity must be hour, day, month or total");
      const sim = q.sim;
      const sims = Array.isArray(sim)
        ? sim.map(String)
        : typeof sim === "string"
          ? sim.split(",")
          : undefined;
      const from = str(q.from);
      const to = str(q.to);
      const rows = queryUsage(db, {
        granularity: g as Granularity,
        ...(sims ? { sims } : {}),
        ...(from ? { from: parseTime(from, "from") } : {}),
        ...(to ? { to: parseTime(to, "to") } : {}),
      });
      res.json({ granularity: g, usage: rows });
    } catch (err) {
      res.status(400).json({ error: (err as Error).message });
    }
  });
}
