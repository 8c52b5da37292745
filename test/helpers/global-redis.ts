import type { TestProject } from "vitest/node";
import { startRedis } from "../../scripts/lib/redis-server.ts";

// One private redis-server for the whole run, on a free port, stopped at the end.
// Tests isolate themselves with a unique BullMQ prefix; tests that need to stop
// Redis start their own instance with startRedis().
export default async function setup(project: TestProject) {
  const redis = await startRedis();
  project.provide("redisUrl", redis.url);
  return async () => {
    await redis.stop();
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
  }
}
