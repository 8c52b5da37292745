// The receiver's settings: how deliveries will be authenticated.
import { type Config, isLoopback } from "../../config.ts";
import { WEBHOOK_PATH } from "../../receive/app.ts";
import type { Add, CheckStatus } from "./check.ts";

/** How deliveries will be authenticated, as the receiver (simmeter start / serve) will see it. */
export function doctorWebhook(config: Config, add: Add): void {
  const secrets = [
    ...(config.TWILIO_AUTH_TOKEN ? ["TWILIO_AUTH_TOKEN"] : []),
    ...(config.KORE_WEBHOOK_SECRET ? ["KORE_WEBHOOK_SECRET"] : []),
  ];
  const extra = {
    twilio: Boolean(config.TWILIO_AUTH_TOKEN),
    kore: Boolean(config.KORE_WEBHOOK_SECRET),
    basic_auth: Boolean(config.BASIC_AUTH),
    allow_unsigned: config.ALLOW_UNSIGNED,
    public_url: config.PUBLIC_URL ?? null,
  };
  const fails: string[] = [];
  const warns: string[] = [];
  const notes: string[] = [];
  if (secrets.length > 0 && !config.PUBLIC_URL)
    fails.push(
      `${secrets.join(" and ")} set without PUBLIC_URL: signatures cover the URL, so simmeter start/serve refuse to start; set PUBLIC_URL to the sink URL exactly as configured`,
    );
  if (secrets.length === 0 && !config.ALLOW_UNSIGNED)
    warns.push(
      "no TWILIO_AUTH_TOKEN or KORE_WEBHOOK_SECRET: simmeter start/serve refuse to start (fine on a host that only runs simmeter work)",
    );
  if (config.ALLOW_UNSIGNED)
    warns.push(
      "ALLOW_UNSIGNED=true: unsigned deliveries are accepted and billed; for development only",
    );
  let url: URL | null = null;
  try {
    url = config.PUBLIC_URL ? new URL(config.PUBLIC_URL) : null;
  } catch {
    url = null;
  }
  if (url && secrets.length > 0) {
    if (url.protocol === "http:" && !isLoopback(url.hostname))
      warns.push(
        `PUBLIC_URL is http://: deliveries${config.BASIC_AUTH ? " and their Basic credentials" : ""} cross the network unencrypted`,
      );
    if (url.pathname !== WEBHOOK_PATH)
      notes.push(
        `the receiver listens on ${WEBHOOK_PATH}: a proxy must forward ${url.pathname} there`,
      );
  }
  if (url?.username && !config.BASIC_AUTH)
    warns.push(
      "PUBLIC_URL holds user:password@ but BASIC_AUTH is not set: the credentials are not checked",
    );
  if (
    url?.username &&
    config.BASIC_AUTH &&
    (decodeURIComponent(url.username) !== config.BASIC_AUTH.user ||
      decodeURIComponent(url.password) !== config.BASIC_AUTH.password)
  )
    fails.push(
      "PUBLIC_URL's user:password@ differs from BASIC_AUTH: every delivery sent to that URL would be refused with 401",
    );
  const summary = [
    secrets.length > 0
      ? `signed by ${secrets.join(" and ")} for ${url ? `${url.origin}${url.pathname}` : "(no PUBLIC_URL)"}`
      : config.ALLOW_UNSIGNED
        ? "unsigned deliveries accepted"
        : "",
    config.BASIC_AUTH ? "Basic auth required" : "",
  ]
    .filter(Boolean)
    .join("; ");
  const status: CheckStatus = fails.length ? "fail" : warns.length ? "warn" : "ok";
  add(
    "webhook",
    status,
    [...fails, ...warns, ...(status === "ok" ? [summary] : []), ...notes]
      .filter(Boolean)
      .join("; "),
    extra,
  );
}
