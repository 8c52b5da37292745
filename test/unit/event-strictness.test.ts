import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { classifyCloudEvent, parseDeliveryBody } from "../../src/events/schema.ts";
import type { Delivery } from "../../src/ingest/job.ts";
import { signKore } from "../../src/receive/kore-signature.ts";
import { receiveDelivery } from "../../src/receive/receive.ts";
import { signTwilio } from "../../src/receive/twilio-signature.ts";
import { testIngest } from "../helpers/ledger.ts";

type CloudEvent = { type: string; data: Record<string, unknown> } & Record<string, unknown>;

const fixtures = new URL("../fixtures/", import.meta.url);
const fixtureText = (name: string) => readFileSync(new URL(name, fixtures), "utf8");
const fixture = (name: string): CloudEvent =>
  (JSON.parse(fixtureText(name)) as CloudEvent[])[0] as CloudEvent;
const ended = () => fixture("constructed-data-session-ended.json");
const CAPTURED_SIM = "HS2f71995b834d803ff5376799ba59bd1d";
const CAPTURED_FLEET = "HF925ae5b4af6aeb7d5034d3f4b09c78ce";

/** The ended fixture with one field replaced by the JSON text `raw`, then parsed like a body. */
function endedWith(path: string[], raw: string): unknown {
  const e = ended() as Record<string, unknown>;
  let at = e;
  for (const k of path.slice(0, -1)) {
    at[k] ??= {};
    at = at[k] as Record<string, unknown>;
  }
  at[path.at(-1) as string] = "__RAW__";
  return JSON.parse(JSON.stringify(e).replace('"__RAW__"', raw));
}

const accepted = (raw: unknown) => {
  const c = classifyCloudEvent(raw);
  if (c.kind !== "event") throw new Error(`not accepted: ${JSON.stringify(c)}`);
  return c.event;
};

describe("descriptive fields are tolerant, billing fields strict", () => {
  it("a valid event carries sim_unique_name as simUniqueName and no oddities", () => {
    const e = accepted(ended());
    expect(e.simUniqueName).toBe("Zeblaze Thor 6 Android Watch");
    expect(e.fleetSid).toBe(CAPTURED_FLEET);
    expect(e.oddities).toEqual([]);
  });

  const ODD: [string, string[], string, string][] = [
    [
      "an empty fleet_sid",
      ["data", "fleet_sid"],
      '""',
      "data.fleet_sid: empty string treated as no fleet",
    ],
    [
      'a fleet_sid "HFxyz"',
      ["data", "fleet_sid"],
      '"HFxyz"',
      'data.fleet_sid: "HFxyz" is not HF followed by 32 hex digits, treated as no fleet',
    ],
    [
      "a numeric fleet_sid",
      ["data", "fleet_sid"],
      "5",
      "data.fleet_sid: expected string, got number, treated as no fleet",
    ],
    [
      "location.lat as a string",
      ["data", "location", "lat"],
      '"34.166991"',
      "data.location.lat: expected number, got string",
    ],
    [
      "location.lon as a string",
      ["data", "location", "lon"],
      '"-118.57"',
      "data.location.lon: expected number, got string",
    ],
    [
      "location.lat of 1e400",
      ["data", "location", "lat"],
      "1e400",
      "data.location.lat: expected number, got a number out of range",
    ],
    [
      "location as an array",
      ["data", "location"],
      "[]",
      "data.location: expected object, got array",
    ],
    [
      "a numeric imei",
      ["data", "imei"],
      "358600842867678",
      "data.imei: expected string, got number",
    ],
    [
      "a numeric imsi",
      ["data", "imsi"],
      "732123200563187",
      "data.imsi: expected string, got number",
    ],
    [
      "network as a string",
      ["data", "network"],
      '"T-Mobile"',
      "data.network: expected object, got string",
    ],
    [
      "a numeric network.mcc",
      ["data", "network", "mcc"],
      "310",
      "data.network.mcc: expected string, got number",
    ],
    [
      "a malformed network.sid",
      ["data", "network", "sid"],
      '"HWnope"',
      'data.network.sid: "HWnope" is not HW followed by 32 hex digits',
    ],
    [
      "a numeric ip_address",
      ["data", "ip_address"],
      "100",
      "data.ip_address: expected string, got number",
    ],
    ["a boolean apn", ["data", "apn"], "true", "data.apn: expected string, got boolean"],
    ["a numeric rat_type", ["data", "rat_type"], "4", "data.rat_type: expected string, got number"],
    [
      "an object data_modifier",
      ["data", "data_modifier"],
      "{}",
      "data.data_modifier: expected string, got object",
    ],
    [
      "a numeric sim_unique_name",
      ["data", "sim_unique_name"],
      "42",
      "data.sim_unique_name: expected string, got number",
    ],
    ["error as a string", ["data", "error"], '"boom"', "data.error: expected object, got string"],
    [
      "a boolean error.code",
      ["data", "error", "code"],
      "true",
      "data.error.code: expected number or string, got boolean",
    ],
  ];

  it.each(ODD)(
    "a data-session.ended with %s is accepted with its bytes, the field read as null and the oddity described",
    (_label, path, raw, oddity) => {
      const e = accepted(endedWith(path, raw));
      expect(e.oddities).toEqual([oddity]);
      expect(e).toMatchObject({
        kind: "data-session.ended",
        simSid: CAPTURED_SIM,
        sessionSid: "PIc64fc7780f12ab694aad316d7b06f7a3",
        cumulativeTotal: 1536,
        windowTotal: 1536,
        readingMs: Date.parse("2022-12-14T13:44:10Z"),
      });
      if (path[1] === "fleet_sid") expect(e.fleetSid).toBeNull();
      else expect(e.fleetSid).toBe(CAPTURED_FLEET);
      if (path[1] === "sim_unique_name") expect(e.simUniqueName).toBeNull();
    },
  );

  it("an event with several odd descriptive fields lists one oddity per field", () => {
    const raw = ended();
    raw.data.fleet_sid = "";
    raw.data.imei = 358600842867678;
    raw.data.location = { cell_id: "1", lac: "2", lat: "1.5", lon: "-2.5" };
    expect(accepted(raw).oddities).toEqual([
      "data.fleet_sid: empty string treated as no fleet",
      "data.imei: expected string, got number",
      "data.location.lat: expected number, got string",
      "data.location.lon: expected number, got string",
    ]);
  });

  it("a bad billing field is still quarantined, with a reason naming only the billing field even when a descriptive field is odd too", () => {
    const raw = ended();
    raw.data.fleet_sid = "";
    raw.data.location = { lat: "1.5" };
    raw.data.sim_sid = "not-a-sim";
    const c = classifyCloudEvent(raw);
    expect(c.kind).toBe("invalid");
    const reason = c.kind === "invalid" ? c.reason : "";
    expect(reason).toMatch(/^schema: data\.sim_sid: /);
    expect(reason).not.toMatch(/fleet_sid|location/);
  });

  it("an ended event with an empty fleet_sid and a string location.lat is counted and billed by the real ingest, with no fleet", async () => {
    const t = await testIngest();
    const raw = ended();
    raw.data.fleet_sid = "";
    (raw.data.location as Record<string, unknown>).lat = "34.166991";
    const s = await t.ingest([raw]);
    expect(s).toMatchObject({ counted: 1, quarantined: 0 });
    expect(await t.usage()).toEqual({ [`${CAPTURED_SIM}@2022-12-14T13:00:00.000Z`]: 1536 });
    const sim = await t.sql("select fleet_sid from sims where sim_sid = ?", CAPTURED_SIM);
    expect(sim).toEqual([{ fleet_sid: null }]);
  });
});

describe("KORE envelopes around unchanged Twilio data", () => {
  const koreWrapped = (envelopeType: string, dataType: string) => {
    const e = ended();
    e.type = envelopeType;
    e.source = "kore-events";
    e.dataschema = "https://events-schemas.korewireless.com/SuperSim.ConnectionEvent/2";
    e.data.event_type = dataType;
    return e;
  };

  it.each([
    "com.kore.supersim.connection.data-session.ended",
    "com.kore.iot.supersim.connection.data-session.ended",
  ])(
    "an envelope typed %s around data typed com.twilio.iot.… of the same kind is accepted; another kind is quarantined",
    (envelopeType) => {
      const e = accepted(
        koreWrapped(envelopeType, "com.twilio.iot.supersim.connection.data-session.ended"),
      );
      expect(e).toMatchObject({ kind: "data-session.ended", cumulativeTotal: 1536, oddities: [] });
      const other = classifyCloudEvent(
        koreWrapped(envelopeType, "com.twilio.iot.supersim.connection.data-session.updated"),
      );
      expect(other.kind).toBe("invalid");
      expect(other.kind === "invalid" && other.reason).toMatch(/data\.event_type .* in kind/);
      const notAKind = classifyCloudEvent(koreWrapped(envelopeType, "com.twilio.iot.something"));
      expect(notAKind.kind).toBe("invalid");
    },
  );
});

describe("a UTF-8 byte order mark", () => {
  const BOM = "\uFEFF";

  it("at the start of a delivery body is ignored when the body is split into events", () => {
    const body = `${BOM}${fixtureText("constructed-data-session-ended.json")}`;
    const parsed = parseDeliveryBody(Buffer.from(body, "utf8"));
    expect(parsed.ok).toBe(true);
    expect(parsed.ok && parsed.events).toHaveLength(1);
    expect(parseDeliveryBody(body).ok).toBe(true);
  });

  it("at the start of a signed webhook body is covered by the signature as sent and the events are counted", async () => {
    const PUBLIC_URL = "https://billing.example.com/webhooks/event-streams";
    const TOKEN = "11111111111111111111111111111111";
    const SECRET = "kore-secret";
    const json = fixtureText("constructed-data-session-ended.json");
    const rawBody = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(json, "utf8")]);
    const stored: Delivery[] = [];
    const deps = {
      config: {
        PUBLIC_URL,
        TWILIO_AUTH_TOKEN: [TOKEN],
        KORE_WEBHOOK_SECRET: [SECRET],
        BASIC_AUTH: undefined,
        ALLOW_UNSIGNED: false,
      },
      enqueue: async (d: Delivery) => {
        stored.push(d);
      },
      now: () => Date.now(),
    };
    const twilioInput = (body: Buffer, signedOver: Buffer) => {
      const s = signTwilio(TOKEN, PUBLIC_URL, signedOver);
      return {
        method: "POST",
        requestTarget: `/webhooks/event-streams${s.url.slice(s.url.indexOf("?"))}`,
        headers: { "x-twilio-signature": s.signature },
        rawBody: body,
      };
    };
    const viaTwilio = await receiveDelivery(twilioInput(rawBody, rawBody), deps);
    expect(viaTwilio).toMatchObject({ kind: "accepted", events: 1, unparsable: false });
    const viaKore = await receiveDelivery(
      {
        method: "POST",
        requestTarget: "/webhooks/event-streams",
        headers: { "kore-signature": signKore(SECRET, "POST", PUBLIC_URL, rawBody) },
        rawBody,
      },
      deps,
    );
    expect(viaKore).toMatchObject({ kind: "accepted", events: 1, unparsable: false });
    // The BOM is part of what was signed: a signature over the body without it does not verify.
    const withoutBom = Buffer.from(json, "utf8");
    expect((await receiveDelivery(twilioInput(rawBody, withoutBom), deps)).kind).toBe("forbidden");

    const t = await testIngest();
    const s = await t.ingestJob({ v: 1, deliveries: stored });
    expect(stored).toHaveLength(2);
    expect(s).toMatchObject({ events: 2, counted: 1, duplicates: 1, quarantined: 0 });
    expect(await t.usage()).toEqual({ [`${CAPTURED_SIM}@2022-12-14T13:00:00.000Z`]: 1536 });
  });
});
