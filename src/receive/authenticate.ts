import type { Config } from "../config.ts";
import type { DeliverySource } from "../ingest/job.ts";
import { verifyBasicAuth } from "./basic-auth.ts";
import { verifyKoreSignature } from "./kore-signature.ts";
import { twilioSignedUrl, verifyTwilioSignature } from "./twilio-signature.ts";

export type AuthInput = {
  method: string;
  /** path + query exactly as received */
  requestTarget: string;
  headers: Record<string, string | string[] | undefined>;
  rawBody: Buffer;
};

export type AuthResult =
  | { ok: true; source: Exclude<DeliverySource, "replay"> }
  /** 401: no credentials of a kind we accept */
  | { ok: false; status: 401; reason: string; claimed: Claimed }
  /** 403: credentials present but wrong */
  | { ok: false; status: 403; reason: string; claimed: Claimed };

/** The sender a refused delivery claimed to be, by its signature header (for the metrics label). */
type Claimed = "twilio" | "kore" | "unknown";

type AuthConfig = Pick<
  Config,
  "PUBLIC_URL" | "TWILIO_AUTH_TOKEN" | "KORE_WEBHOOK_SECRET" | "BASIC_AUTH" | "ALLOW_UNSIGNED"
>;

const header = (h: AuthInput["headers"], name: string): string | undefined => {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
};

/** Decides who sent a delivery. Fails closed: a signature that is present is always checked. */
export function authenticate(input: AuthInput, config: AuthConfig): AuthResult {
  if (
    config.BASIC_AUTH &&
    !verifyBasicAuth(header(input.headers, "authorization"), config.BASIC_AUTH)
  ) {
    const claimed: Claimed =
      header(input.headers, "x-twilio-signature") !== undefined
        ? "twilio"
        : header(input.headers, "kore-signature") !== undefined
          ? "kore"
          : "unknown";
    return { ok: false, status: 401, reason: "HTTP Basic credentials missing or wrong", claimed };
  }
  const twilioSig = header(input.headers, "x-twilio-signature");
  const koreSig = header(input.headers, "kore-signature");
  if (twilioSig !== undefined) {
    if (!config.TWILIO_AUTH_TOKEN || !config.PUBLIC_URL) {
      return {
        ok: false,
        status: 403,
        reason: "X-Twilio-Signature received but TWILIO_AUTH_TOKEN is not configured",
        claimed: "twilio",
      };
    }
    const r = verifyTwilioSignature({
      authTokens: config.TWILIO_AUTH_TOKEN,
      signature: twilioSig,
      url: twilioSignedUrl(config.PUBLIC_URL, input.requestTarget),
      rawBody: input.rawBody,
    });
    return r.ok
      ? { ok: true, source: "twilio" }
      : { ok: false, status: 403, reason: r.reason, claimed: "twilio" };
  }
  if (koreSig !== undefined && (koreSig.trim() !== "" || config.KORE_WEBHOOK_SECRET)) {
    if (!config.KORE_WEBHOOK_SECRET || !config.PUBLIC_URL) {
      return {
        ok: false,
        status: 403,
        reason: "kore-signature received but KORE_WEBHOOK_SECRET is not configured",
        claimed: "kore",
      };
    }
    const r = verifyKoreSignature({
      secrets: config.KORE_WEBHOOK_SECRET,
      signature: koreSig,
      method: input.method,
      callbackUrl: config.PUBLIC_URL,
      rawBody: input.rawBody,
    });
    return r.ok
      ? { ok: true, source: "kore" }
      : { ok: false, status: 403, reason: r.reason, claimed: "kore" };
  }
  if (config.ALLOW_UNSIGNED) return { ok: true, source: "unsigned" };
  return {
    ok: false,
    status: 401,
    reason:
      "no X-Twilio-Signature or kore-signature header (set ALLOW_UNSIGNED=true only for local development)",
    claimed: "unknown",
  };
}
