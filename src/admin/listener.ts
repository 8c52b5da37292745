import type { Server } from "node:http";
import type express from "express";
import type { Config } from "../config.ts";
import type { Logger } from "../lib/logger.ts";
import type { Closer } from "../lib/shutdown.ts";

export type AdminListener = { port: number; url: string; closer: Closer };

/** Binds the admin app on ADMIN_HOST:ADMIN_PORT (0 picks a free port, logged). */
export async function listenAdmin(
  app: express.Express,
  config: Pick<Config, "ADMIN_HOST" | "ADMIN_PORT" | "ADMIN_TOKEN">,
  logger: Logger,
): Promise<AdminListener> {
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.ADMIN_PORT, config.ADMIN_HOST, (err?: Error) =>
      err
        ? reject(
            new Error(
              `admin listener on ${config.ADMIN_HOST}:${config.ADMIN_PORT}: ${err.message}`,
            ),
          )
        : resolve(s),
    );
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.ADMIN_PORT;
  const host = config.ADMIN_HOST.includes(":") ? `[${config.ADMIN_HOST}]` : config.ADMIN_HOST;
  const url = `http://${host}:${port}`;
  logger.info(
    { url, token: config.ADMIN_TOKEN ? "required" : "not set (loopback only)" },
    "admin listener: /healthz /readyz /metrics /api",
  );
  return {
    port,
    url,
    closer: {
      name: "admin-http",
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
          setTimeout(() => server.closeAllConnections(), 1000).unref();
        }),
    },
  };
}
