import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Checks an `Authorization: Basic …` header against the expected credentials in constant time.
 * Event Streams sends it on every request when the sink URL holds user:pass@.
 */
export function verifyBasicAuth(
  header: string | undefined,
  expected: { user: string; password: string },
): boolean {
  // An empty expected user means misconfiguration; never let it authenticate anything.
  if (header === undefined || expected.user === "") return false;
  const m = /^basic[ \t]+(\S+)[ \t]*$/i.exec(header.trim());
  const encoded = m?.[1];
  if (encoded === undefined) return false;
  // Compare bytes, not decoded strings: decoding could map different inputs to the same text.
  const got = Buffer.from(encoded, "base64");
  const want = Buffer.from(`${expected.user}:${expected.password}`, "utf8");
  // Hashing first gives equal-length inputs, so neither length nor a prefix leaks.
  return timingSafeEqual(sha256(got), sha256(want));
}

function sha256(data: Buffer): Buffer {
  return createHash("sha256").update(data).digest();
}
