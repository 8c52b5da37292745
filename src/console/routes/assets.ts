// The static files under /console/assets, read once: Pico and Chart.js from node_modules
// (resolved, so the same code works from src/ and dist/), the console's own CSS and script.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type express from "express";
import type { Request, Response } from "express";
import { CONSOLE_CSS, CONSOLE_JS } from "../client.ts";

const require_ = createRequire(import.meta.url);

function loadAssets(): Map<string, { type: string; body: Buffer }> {
  const chartDir = dirname(require_.resolve("chart.js"));
  const files: [string, string, Buffer][] = [
    ["pico.min.css", "text/css", readFileSync(require_.resolve("@picocss/pico/css/pico.min.css"))],
    ["chart.umd.min.js", "text/javascript", readFileSync(join(chartDir, "chart.umd.min.js"))],
    ["console.css", "text/css", Buffer.from(CONSOLE_CSS)],
    ["console.js", "text/javascript", Buffer.from(CONSOLE_JS)],
  ];
  return new Map(
    files.map(([name, type, body]) => [name, { type: `${type}; charset=utf-8`, body }]),
  );
}

export function assetRoutes(router: express.Router): void {
  const assets = loadAssets();
  router.get("/assets/:file", (req: Request, res: Response) => {
    const a = assets.get(String(req.params.file));
    if (!a) {
      res.status(404).type("text/plain").send("no such asset");
      return;
    }
    res.set("Cache-Control", "public, max-age=3600");
    res.type(a.type).send(a.body);
  });
}
