import pino from "pino";

export type Logger = pino.Logger;

/** Structured JSON logs on stderr (stdout stays free for CLI output). */
export function createLogger(level: string, name = "simmeter"): Logger {
  return pino(
    {
      name,
      level,
      redact: {
        paths: [
          "*.authorization",
          "*.TWILIO_AUTH_TOKEN",
          "*.KORE_WEBHOOK_SECRET",
          "*.STRIPE_SECRET_KEY",
          "*.BASIC_AUTH",
          "*.ADMIN_TOKEN",
        ],
        censor: "(redacted)",
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}
