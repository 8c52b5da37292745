import { createHash, timingSafeEqual } from "node:crypto";
import type { VerifyResult } from "./twilio-signature.ts";

/** KORE signs the configured callback URL with its query string and fragment dropped. */
export function koreSignedUrl(callbackUrl: string): string {
  // Plain string cut, not new URL(): that would add a trailing "/" to a bare origin and
  // re-encode the path, and KORE signs the URL as typed.
  const end = callbackUrl.search(/[?#]/);
  return end === -1 ? callbackUrl : callbackUrl.slice(0, end);
}

export function verifyKoreSignature(input: {
  secrets: readonly string[];
  signature: string | undefined;
  method: string;
  callbackUrl: string;
  rawBody: Buffer;
}): VerifyResult {
  const { secrets, signature, method, callbackUrl, rawBody } = input;
  if (signature === undefined) {
    return { ok: false, reason: "kore-signature header missing" };
  }
  const received = signature.trim().toLowerCase();
  if (received === "") {
    // KORE sends the header empty when the account has no webhook secret: unauthenticated.
    return {
      ok: false,
      reason:
        "kore-signature header empty: the KORE account has no webhook secret; create one in KORE's developer portal and set KORE_WEBHOOK_SECRET",
    };
  }
  if (secrets.length === 0) {
    return { ok: false, reason: "no KORE_WEBHOOK_SECRET configured" };
  }
  const got = Buffer.from(received, "utf8");
  for (const [tokenIndex, secret] of secrets.entries()) {
    const expected = Buffer.from(signKore(secret, method, callbackUrl, rawBody), "utf8");
    // Length is not secret (always 64 hex chars), and timingSafeEqual throws on a mismatch.
    if (got.length === expected.length && timingSafeEqual(got, expected)) {
      return { ok: true, tokenIndex };
    }
  }
  return {
    ok: false,
    reason:
      "kore-signature does not match any configured KORE_WEBHOOK_SECRET; check PUBLIC_URL equals the callback URL configured at KORE (scheme, host, port, path) and that the body was not re-encoded by a proxy",
  };
}

/** Lowercase hex SHA-256 (a plain hash, not an HMAC) of secret + METHOD + signedUrl + body. */
export function signKore(
  secret: string,
  method: string,
  callbackUrl: string,
  rawBody: Buffer | string,
): string {
  // Hashed as bytes so a body that is not valid UTF-8 is covered exactly as received.
  return createHash("sha256")
    .update(Buffer.from(secret, "utf8"))
    .update(Buffer.from(method.toUpperCase(), "utf8"))
    .update(Buffer.from(koreSignedUrl(callbackUrl), "utf8"))
    .update(typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : rawBody)
    .digest("hex");
}
