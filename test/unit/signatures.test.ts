import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { getExpectedTwilioSignature } from "twilio/lib/webhooks/webhooks.js";
import { describe, expect, it } from "vitest";
import { verifyBasicAuth } from "../../src/receive/basic-auth.ts";
import { koreSignedUrl, signKore, verifyKoreSignature } from "../../src/receive/kore-signature.ts";
import {
  signTwilio,
  twilioSignedUrl,
  verifyTwilioSignature,
} from "../../src/receive/twilio-signature.ts";

const fixtures = new URL("../fixtures/", import.meta.url);

type TwilioVector = {
  id: string;
  authToken: string;
  method: string;
  url: string;
  signedUrl: string;
  bodyFile?: string;
  body: string | null;
  bodySha256: string | null;
  signature: string;
  expectValid: boolean | null;
};
type KoreVector = {
  id: string;
  secret: string;
  method: string;
  callbackUrl: string;
  signedUrl: string;
  body: string;
  signature: string;
  expectValid: boolean;
};
type Vectors = { twilio: { vectors: TwilioVector[] }; kore: { vectors: KoreVector[] } };

const vectors = JSON.parse(
  readFileSync(new URL("signature-vectors.json", fixtures), "utf8"),
) as Vectors;
// Raw bytes: a decoded-and-re-encoded copy would hide a stray trailing newline.
const testEventBytes = readFileSync(new URL("twilio-test-event.json", fixtures));

const twilioVectors = vectors.twilio.vectors;
const koreVectors = vectors.kore.vectors;
const byId = (id: string): TwilioVector => {
  const v = twilioVectors.find((x) => x.id === id);
  if (!v) throw new Error(`vector ${id} missing from signature-vectors.json`);
  return v;
};

function flipByte(buf: Buffer, index: number, mask: number): Buffer {
  const out = Buffer.from(buf);
  out[index] = (out[index] ?? 0) ^ mask;
  return out;
}

describe("Twilio signature vectors", () => {
  it("fixture file holds the expected mix of vectors", () => {
    expect(twilioVectors.length).toBeGreaterThanOrEqual(6);
    expect(twilioVectors.some((v) => v.expectValid === null)).toBe(true);
    expect(twilioVectors.some((v) => v.expectValid === false)).toBe(true);
  });

  const withVerdict = twilioVectors.filter(
    (v): v is TwilioVector & { body: string; expectValid: boolean } =>
      v.expectValid !== null && v.body !== null,
  );
  it.each(withVerdict.map((v) => [v.id, v] as const))("%s", (_id, v) => {
    const result = verifyTwilioSignature({
      authTokens: [v.authToken],
      signature: v.signature,
      url: v.url,
      rawBody: Buffer.from(v.body, "utf8"),
    });
    expect(result.ok).toBe(v.expectValid);
    if (result.ok) expect(result.tokenIndex).toBe(0);
  });

  const urlOnly = twilioVectors.filter((v) => v.expectValid === null);
  it.each(urlOnly.map((v) => [v.id, v] as const))("%s: URL HMAC step only", (_id, v) => {
    expect(getExpectedTwilioSignature(v.authToken, v.signedUrl, {})).toBe(v.signature);
    const viaCrypto = createHmac("sha1", v.authToken).update(v.signedUrl, "utf8").digest("base64");
    expect(viaCrypto).toBe(v.signature);
  });

  it("the :443 vector passes only because port variants are tried", () => {
    const v = byId("twilio-node-empty-object-body-signed-with-port-443");
    expect(v.url).not.toBe(v.signedUrl);
    expect(getExpectedTwilioSignature(v.authToken, v.url, {})).not.toBe(v.signature);
    expect(getExpectedTwilioSignature(v.authToken, v.signedUrl, {})).toBe(v.signature);
  });
});

describe("Event Streams test event (raw bytes)", () => {
  const v = byId("event-streams-test-event");

  it("fixture bytes equal the vector body and have no trailing newline", () => {
    expect(testEventBytes.equals(Buffer.from(v.body ?? "", "utf8"))).toBe(true);
    expect(testEventBytes.at(-1)).not.toBe(0x0a);
  });

  it("verifies", () => {
    expect(
      verifyTwilioSignature({
        authTokens: [v.authToken],
        signature: v.signature,
        url: v.url,
        rawBody: testEventBytes,
      }),
    ).toEqual({ ok: true, tokenIndex: 0 });
  });

  it("fails with a trailing newline, blaming the body", () => {
    const result = verifyTwilioSignature({
      authTokens: [v.authToken],
      signature: v.signature,
      url: v.url,
      rawBody: Buffer.concat([testEventBytes, Buffer.from("\n")]),
    });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason).toMatch(/body hash does not match bodySHA256/);
  });

  it("verifies when rebuilt from PUBLIC_URL and the request target", () => {
    const url = twilioSignedUrl(
      "https://96e5-165-225-114-134.ngrok-free.app/webhook",
      `/webhook?bodySHA256=${v.bodySha256}`,
    );
    expect(url).toBe(v.signedUrl);
    expect(
      verifyTwilioSignature({
        authTokens: [v.authToken],
        signature: v.signature,
        url,
        rawBody: testEventBytes,
      }).ok,
    ).toBe(true);
  });
});

describe("verifyTwilioSignature", () => {
  const token = "0123456789abcdef0123456789abcdef";
  const body = Buffer.from('[{"type":"com.twilio.iot.supersim.connection.data-session.updated"}]');
  const signed = signTwilio(token, "https://billing.example.com/webhooks/event-streams", body);

  const verify = (over: Partial<Parameters<typeof verifyTwilioSignature>[0]> = {}) =>
    verifyTwilioSignature({
      authTokens: [token],
      signature: signed.signature,
      url: signed.url,
      rawBody: body,
      ...over,
    });
  const reasonOf = (r: ReturnType<typeof verifyTwilioSignature>): string =>
    r.ok ? "(accepted)" : r.reason;

  it("accepts a correctly signed request", () => {
    expect(verify()).toEqual({ ok: true, tokenIndex: 0 });
  });

  it("rejects a missing or empty header", () => {
    expect(reasonOf(verify({ signature: undefined }))).toBe("X-Twilio-Signature header missing");
    expect(reasonOf(verify({ signature: "" }))).toBe("X-Twilio-Signature header missing");
  });

  it("rejects when no token is configured", () => {
    expect(verify({ authTokens: [] }).ok).toBe(false);
  });

  it("rejects a URL without bodySHA256 even when the URL signature is right", () => {
    const url = "https://billing.example.com/webhooks/event-streams?foo=1";
    const signature = getExpectedTwilioSignature(token, url, {});
    expect(reasonOf(verify({ url, signature }))).toMatch(/^bodySHA256 query parameter missing/);
  });

  it("rejects a tampered body", () => {
    expect(reasonOf(verify({ rawBody: Buffer.from(`${body.toString()} `) }))).toMatch(
      /^body hash does not match bodySHA256/,
    );
  });

  it("rejects an uppercase bodySHA256, as twilio-node does", () => {
    const url = signed.url.replace(/bodySHA256=([0-9a-f]+)/, (_m, h: string) => {
      return `bodySHA256=${h.toUpperCase()}`;
    });
    const signature = getExpectedTwilioSignature(token, url, {});
    expect(verify({ url, signature }).ok).toBe(false);
  });

  it("rejects a wrong token with a config hint and no secret in the reason", () => {
    const other = "ffffffffffffffffffffffffffffffff";
    const reason = reasonOf(verify({ authTokens: [other] }));
    expect(reason).toMatch(/^signature does not match any configured TWILIO_AUTH_TOKEN/);
    expect(reason).toContain("PUBLIC_URL");
    expect(reason).not.toContain(other);
    expect(reason).not.toContain(token);
  });

  it("accepts the second token during rotation and reports its index", () => {
    expect(verify({ authTokens: ["old-token-that-does-not-sign", token] })).toEqual({
      ok: true,
      tokenIndex: 1,
    });
  });

  it("rejects a URL that differs from the signed one", () => {
    expect(verify({ url: signed.url.replace("/event-streams", "/other") }).ok).toBe(false);
    expect(verify({ url: signed.url.replace("https://", "http://") }).ok).toBe(false);
  });

  it("accepts the default-port variant of the signed URL", () => {
    const url = signed.url.replace("billing.example.com", "billing.example.com:443");
    expect(verify({ url }).ok).toBe(true);
  });

  it("accepts a signature over the URL with userinfo", () => {
    const s = signTwilio(token, "https://user:pa%3Ass@billing.example.com/hook", body);
    expect(verify({ url: s.url, signature: s.signature }).ok).toBe(true);
  });

  it("accepts a signature over the URL without userinfo when PUBLIC_URL has it", () => {
    const s = signTwilio(token, "https://billing.example.com/hook", body);
    const withUserinfo = s.url.replace("https://", "https://user:pass@");
    expect(verify({ url: withUserinfo, signature: s.signature })).toEqual({
      ok: true,
      tokenIndex: 0,
    });
  });

  it("does not throw on malformed URLs", () => {
    for (const url of ["", "not a url", "https://", "://x?bodySHA256=ab", "http://[::1/x"]) {
      let result: ReturnType<typeof verifyTwilioSignature> | undefined;
      expect(() => {
        result = verify({ url });
      }).not.toThrow();
      expect(result?.ok).toBe(false);
    }
  });
});

describe("twilioSignedUrl", () => {
  const hash = "f4dc494f1e604a19df36cdd069f7956b1f261dc954ae1c698ed8b4939fd9ab54";

  it("appends the received query to a PUBLIC_URL without a query", () => {
    expect(twilioSignedUrl("https://ex.com/hook", `/hook?bodySHA256=${hash}`)).toBe(
      `https://ex.com/hook?bodySHA256=${hash}`,
    );
  });

  it("keeps PUBLIC_URL's path when a proxy rewrote it", () => {
    expect(twilioSignedUrl("https://ex.com/public/hook", `/internal?bodySHA256=${hash}`)).toBe(
      `https://ex.com/public/hook?bodySHA256=${hash}`,
    );
  });

  it("does not re-encode the received query", () => {
    expect(twilioSignedUrl("https://ex.com/hook", "/hook?a=%27x'+y&bodySHA256=1")).toBe(
      "https://ex.com/hook?a=%27x'+y&bodySHA256=1",
    );
  });

  it("uses PUBLIC_URL's origin (port, userinfo) plus the request target when it has a query", () => {
    expect(
      twilioSignedUrl("https://u:p@ex.com:8443/hook?tenant=a", `/hook?tenant=a&bodySHA256=${hash}`),
    ).toBe(`https://u:p@ex.com:8443/hook?tenant=a&bodySHA256=${hash}`);
  });

  it("leaves PUBLIC_URL unchanged when nothing was received in the query", () => {
    expect(twilioSignedUrl("https://ex.com/hook", "/hook")).toBe("https://ex.com/hook");
    expect(twilioSignedUrl("https://ex.com/hook", "/hook?")).toBe("https://ex.com/hook");
  });

  it("round-trips with signTwilio for a PUBLIC_URL with and without a query", () => {
    const body = Buffer.from("[]");
    for (const publicUrl of ["https://ex.com/hook", "https://ex.com:8443/hook?tenant=a&x=1"]) {
      const s = signTwilio("tok", publicUrl, body);
      const target = s.url.slice(s.url.indexOf("/", "https://".length));
      const url = twilioSignedUrl(publicUrl, target);
      expect(url).toBe(s.url);
      expect(
        verifyTwilioSignature({ authTokens: ["tok"], signature: s.signature, url, rawBody: body })
          .ok,
      ).toBe(true);
    }
  });
});

describe("KORE signature vectors", () => {
  it.each(koreVectors.map((v) => [v.id, v] as const))("%s", (_id, v) => {
    expect(koreSignedUrl(v.callbackUrl)).toBe(v.signedUrl);
    expect(signKore(v.secret, v.method, v.callbackUrl, v.body)).toBe(v.signature);
    const result = verifyKoreSignature({
      secrets: [v.secret],
      signature: v.signature,
      method: v.method,
      callbackUrl: v.callbackUrl,
      rawBody: Buffer.from(v.body, "utf8"),
    });
    expect(result.ok).toBe(v.expectValid);
  });

  it("includes the query-dropping vector", () => {
    expect(koreVectors.some((v) => v.callbackUrl !== v.signedUrl)).toBe(true);
  });
});

describe("verifyKoreSignature", () => {
  const v = koreVectors[0];
  if (!v) throw new Error("no KORE vectors");
  const base = {
    secrets: [v.secret],
    signature: v.signature,
    method: v.method,
    callbackUrl: v.callbackUrl,
    rawBody: Buffer.from(v.body, "utf8"),
  };

  it("drops query and fragment from the callback URL", () => {
    expect(koreSignedUrl("https://testendpoint.com#cbs=kore")).toBe("https://testendpoint.com");
    expect(koreSignedUrl("https://t.com/a/b?x=1#f")).toBe("https://t.com/a/b");
    expect(
      verifyKoreSignature({ ...base, callbackUrl: "https://testendpoint.com#cbs=kore" }).ok,
    ).toBe(true);
  });

  it("rejects a missing or empty header", () => {
    const missing = verifyKoreSignature({ ...base, signature: undefined });
    const empty = verifyKoreSignature({ ...base, signature: "" });
    expect(missing.ok).toBe(false);
    expect(empty.ok).toBe(false);
    if (!empty.ok) expect(empty.reason).toMatch(/empty/);
  });

  it("rejects a wrong secret without naming it", () => {
    const result = verifyKoreSignature({ ...base, secrets: ["wrong-secret"] });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.reason).toMatch(/KORE_WEBHOOK_SECRET/);
      expect(result.reason).not.toContain("wrong-secret");
    }
  });

  it("rejects when no secret is configured", () => {
    expect(verifyKoreSignature({ ...base, secrets: [] }).ok).toBe(false);
  });

  it("accepts the second secret during rotation", () => {
    expect(verifyKoreSignature({ ...base, secrets: ["old", v.secret] })).toEqual({
      ok: true,
      tokenIndex: 1,
    });
  });

  it("accepts an uppercase hex header", () => {
    expect(verifyKoreSignature({ ...base, signature: v.signature.toUpperCase() }).ok).toBe(true);
  });

  it("rejects a truncated header, another method, another URL and a tampered body", () => {
    expect(verifyKoreSignature({ ...base, signature: v.signature.slice(0, 63) }).ok).toBe(false);
    expect(verifyKoreSignature({ ...base, method: "PUT" }).ok).toBe(false);
    expect(verifyKoreSignature({ ...base, callbackUrl: "https://testendpoint.com/" }).ok).toBe(
      false,
    );
    expect(verifyKoreSignature({ ...base, rawBody: Buffer.from(`${v.body}\n`) }).ok).toBe(false);
  });
});

describe("round-trip properties", () => {
  const token = fc.string({ minLength: 1, maxLength: 40 });
  const body = fc.uint8Array({ minLength: 1, maxLength: 512 }).map((b) => Buffer.from(b));
  const path = fc.constantFrom("/hook", "/a/b", "/webhooks/event-streams", "/x?tenant=1");

  it("signTwilio output verifies; flipping any body byte fails", () => {
    fc.assert(
      fc.property(
        token,
        body,
        path,
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (tok, raw, p, at, mask) => {
          const s = signTwilio(tok, `https://billing.example.com${p}`, raw);
          const input = { authTokens: [tok], signature: s.signature, url: s.url, rawBody: raw };
          expect(verifyTwilioSignature(input).ok).toBe(true);
          const tampered = flipByte(raw, at % raw.length, mask);
          expect(verifyTwilioSignature({ ...input, rawBody: tampered }).ok).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("signKore output verifies; flipping any body byte fails", () => {
    fc.assert(
      fc.property(
        token,
        body,
        path,
        fc.constantFrom("POST", "post", "PUT"),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (secret, raw, p, method, at, mask) => {
          const callbackUrl = `https://billing.example.com${p}`;
          const input = {
            secrets: [secret],
            signature: signKore(secret, method, callbackUrl, raw),
            method,
            callbackUrl,
            rawBody: raw,
          };
          expect(verifyKoreSignature(input).ok).toBe(true);
          const tampered = flipByte(raw, at % raw.length, mask);
          expect(verifyKoreSignature({ ...input, rawBody: tampered }).ok).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("verifyBasicAuth", () => {
  const expected = { user: "simmeter", password: "s3cr:et é" };
  const header = (s: string) => `Basic ${Buffer.from(s, "utf8").toString("base64")}`;

  it("accepts the right credentials, scheme case-insensitively", () => {
    expect(verifyBasicAuth(header("simmeter:s3cr:et é"), expected)).toBe(true);
    expect(verifyBasicAuth(header("simmeter:s3cr:et é").replace("Basic", "basic"), expected)).toBe(
      true,
    );
  });

  it("rejects wrong, partial, missing and malformed credentials", () => {
    for (const h of [
      undefined,
      "",
      "Basic",
      "Basic ",
      "Bearer abc",
      header("simmeter:wrong"),
      header("other:s3cr:et é"),
      header("simmeter:s3cr:et"),
      header("simmeter:s3cr:et éx"),
      header("simmeter"),
      `Digest ${Buffer.from("simmeter:s3cr:et é").toString("base64")}`,
    ]) {
      expect(verifyBasicAuth(h, expected)).toBe(false);
    }
  });

  it("never authenticates against an empty expected user", () => {
    expect(verifyBasicAuth(header(":"), { user: "", password: "" })).toBe(false);
  });
});
