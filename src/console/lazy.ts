import express, { type NextFunction, type Request, type Response } from "express";
import type { ConsoleDeps } from "./deps.ts";

const PREFIX = "/console";

/**
 * Mounts the console on first use: its pages, preact, chart.js and bull-board cost about 30 MB of
 * memory, which a process whose operators never open /console (most `work` processes, every
 * receiver behind a load balancer) should not pay. The first request loads them (once).
 */
export function mountConsoleLazily(app: express.Express, deps: ConsoleDeps): void {
  let loading: Promise<express.Express> | null = null;
  const load = () => {
    loading ??= import("./mount.ts").then((m) => {
      const sub = express();
      sub.disable("x-powered-by");
      sub.set("etag", false);
      m.mountConsole(sub, deps);
      return sub;
    });
    return loading;
  };
  app.use((req: Request, res: Response, next: NextFunction) => {
    if (req.path !== PREFIX && !req.path.startsWith(`${PREFIX}/`)) {
      next();
      return;
    }
    load().then(
      (sub) => sub(req, res, next),
      (err: unknown) => {
        loading = null;
        next(err);
      },
    );
  });
}
