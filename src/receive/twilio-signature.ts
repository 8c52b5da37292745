import { createHash, timingSafeEqual } from "node:crypto";
// Deep import on purpose: the package root loads the whole REST client (~75-120 ms at start-up,
// and it has no named ESM exports), while this CommonJS file needs only node:crypto/url/querystring
// (~10 ms). twilio has no "exports" map, so the path resolves under Node ESM, tsx and vitest.
import {
  getExpectedTwilioSignature,
  validateRequestWithBody,
} from "twilio/lib/webhooks/webhooks.js";

export type VerifyResult = { ok: true; tokenIndex: number } | { ok: false; reason: string };

// scheme://authority, split the way twilio-node does it, so nothing is re-encoded.
const ORIGIN_RE = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)/i;

/**
 * Rebuilds the URL Twilio signed: PUBLIC_URL (the sink destination exactly as configured) plus the
 * query string as received. If publicUrl has no query: publicUrl + "?" + received query (so a
 * proxy that rewrites the path still verifies). If publicUrl has its own query: publicUrl's
 * scheme/userinfo/host/port + requestTarget exactly as received.
 */
export function twilioSignedUrl(publicUrl: string, requestTarget: string): string {
  if (publicUrl.includes("?")) {
    // Twilio appended bodySHA256 to the configured query; where it put it is only knowable
    // from the request itself, so trust the received target verbatim.
    const origin = ORIGIN_RE.exec(publicUrl)?.[0];
    return (origin ?? publicUrl) + requestTarget;
  }
  const q = requestTarget.indexOf("?");
  // No query at all: leave the URL alone so verification reports the missing bodySHA256.
  if (q === -1 || q === requestTarget.length - 1) return publicUrl;
  return `${publicUrl}?${requestTarget.slice(q + 1)}`;
}

export function verifyTwilioSignature(input: {
  authTokens: readonly string[];
  signature: string | undefined;
  url: string;
  rawBody: Buffer;
}): VerifyResult {
  const { authTokens, signature, url, rawBody } = input;
  if (signature === undefined || signature === "") {
    return { ok: false, reason: "X-Twilio-Signature header missing" };
  }
  if (authTokens.length === 0) {
    return { ok: false, reason: "no TWILIO_AUTH_TOKEN configured" };
  }
  let bodyHash: string | null;
  try {
    // Same lookup as twilio-node (first value, URL-decoded), so both checks agree.
    bodyHash = new URL(url).searchParams.get("bodySHA256");
  } catch {
    return {
      ok: false,
      reason: "signed URL is not a valid absolute URL; check PUBLIC_URL (scheme, host, port, path)",
    };
  }
  if (!bodyHash) {
    return {
      ok: false,
      reason:
        "bodySHA256 query parameter missing: the sink URL must point at this receiver and the request must be JSON",
    };
  }
  // Checked here as well as inside validateRequestWithBody only to tell the operator which part
  // failed; a body problem points at a proxy, a signature problem at config.
  if (!safeEqual(bodyHash, sha256Hex(rawBody))) {
    return {
      ok: false,
      reason: "body hash does not match bodySHA256 (body altered or re-encoded by a proxy)",
    };
  }
  const urls = urlVariants(url);
  for (const [tokenIndex, token] of authTokens.entries()) {
    for (const candidate of urls) {
      if (twilioAccepts(token, signature, candidate, rawBody)) return { ok: true, tokenIndex };
    }
  }
  return {
    ok: false,
    reason:
      "signature does not match any configured TWILIO_AUTH_TOKEN; check PUBLIC_URL equals the sink destination exactly (scheme, host, port, path)",
  };
}

/** test/simulator helper: signs the way Event Streams does (bodySHA256 appended, then HMAC). */
export function signTwilio(
  authToken: string,
  url: string,
  rawBody: Buffer | string,
): { url: string; signature: string } {
  const body = typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : rawBody;
  const signedUrl = `${url}${url.includes("?") ? "&" : "?"}bodySHA256=${sha256Hex(body)}`;
  return { url: signedUrl, signature: getExpectedTwilioSignature(authToken, signedUrl, {}) };
}

function twilioAccepts(token: string, signature: string, url: string, rawBody: Buffer): boolean {
  try {
    // Typed as string, but it only does Buffer.from(body), which copies a Buffer byte for byte;
    // decoding to a string first would corrupt non-UTF-8 bytes and reject a valid delivery.
    return validateRequestWithBody(token, signature, url, rawBody as unknown as string);
  } catch {
    // new URL() inside twilio-node throws TypeError on malformed input: that is a rejection.
    return false;
  }
}

// Whether Event Streams signs a destination's user:pass@ is unconfirmed; twilio-node keeps it,
// so try that first, then the bare form.
function urlVariants(url: string): string[] {
  const m = ORIGIN_RE.exec(url);
  if (!m) return [url];
  const [prefix, scheme = "", authority = ""] = m;
  const at = authority.lastIndexOf("@");
  if (at === -1) return [url];
  return [url, scheme + authority.slice(at + 1) + url.slice(prefix.length)];
}

function sha256Hex(body: Buffer): string {
  return createHash("sha256").update(body).digest("hex");
}

// Length is not secret (a SHA-256 hex digest is always 64 chars), so the early return is safe.
// Case-sensitive on purpose: twilio-node rejects an uppercase hash and so must we.
function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}
