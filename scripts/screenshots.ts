// npm-less helper: `npx tsx scripts/screenshots.ts` regenerates docs/screenshots/console-*.png
// (light and dark) from a ledger filled the way the console's browser test fills it: a private
// redis-server, the Stripe emulator, `simmeter start` fed by the simulator through the signed
// webhook. Needs redis-server and Chromium (apt-get install -y chromium; CHROMIUM_PATH to override).
// `npm test` writes the same files from test/browser/console.test.ts.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { consoleRig, launchChromium, login, SCREENSHOT_DIR, shoot } from "../test/browser/rig.ts";
import { startRedis } from "./lib/redis-server.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
// The rig runs bin/simmeter.mjs, which runs dist/: build it first when sources are newer.
const build = spawnSync(process.execPath, ["scripts/build.mjs", "--if-stale"], {
  cwd: root,
  stdio: "inherit",
});
if (build.status !== 0) process.exit(build.status ?? 1);

const browser = await launchChromium();
const redis = await startRedis();
const log = (l: string) => process.stderr.write(`${l}\n`);
const rig = await consoleRig({ redisUrl: redis.url, log });
try {
  const context = await browser.newContext({
    viewport: { width: 1440, height: 900 },
    colorScheme: "light",
  });
  const page = await context.newPage();
  await login(page, rig.adminUrl, rig.token);
  await page.goto(`${rig.adminUrl}/console`);
  await shoot(page, "console-overview");
  await page.goto(`${rig.adminUrl}/console/customers/${rig.mappedCustomer}`);
  await shoot(page, "console-customer");
  process.stdout.write(
    `wrote ${SCREENSHOT_DIR}console-overview.png, console-customer.png (and -dark variants)\n`,
  );
} finally {
  await browser.close();
  await rig.stop();
  await redis.stop();
}
