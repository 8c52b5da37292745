import type { ConnectionKind } from "../events/schema.ts";

// Builds Super SIM Connection Events in the Twilio or KORE envelope, shaped like the captured
// event in test/fixtures (keys absent rather than null where the capture omits them).

export type Envelope = "twilio" | "kore";

export type EventSpec = {
  eventSid: string;
  kind: ConnectionKind;
  accountSid: string;
  simSid: string;
  iccid: string;
  fleetSid?: string | null;
  timestampMs: number;
  sessionSid?: string;
  sessionStartMs?: number;
  sessionEndMs?: number;
  windowStartMs?: number;
  windowEndMs?: number;
  windowDown?: number;
  windowUp?: number;
  cumulativeDown?: number;
  cumulativeUp?: number;
  /** schema 1 omits the cumulative counters */
  schemaVersion?: 1 | 2;
  error?: { code: number; message: string };
};

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

export function buildCloudEvent(
  spec: EventSpec,
  envelope: Envelope = "twilio",
): Record<string, unknown> {
  const prefix = envelope === "twilio" ? "com.twilio.iot" : "com.kore.iot";
  const type = `${prefix}.supersim.connection.${spec.kind}`;
  const version = spec.schemaVersion ?? 2;
  const data: Record<string, unknown> = {
    event_sid: spec.eventSid,
    event_type: type,
    account_sid: spec.accountSid,
    sim_sid: spec.simSid,
    sim_iccid: spec.iccid,
    timestamp: iso(spec.timestampMs),
    apn: "super",
    rat_type: "4G LTE",
    network: {
      mcc: "310",
      mnc: "260",
      sid: "HWd46933be78a54c05b5c287ddeb9592f4",
      friendly_name: "T-Mobile",
      iso_country: "US",
    },
  };
  if (spec.fleetSid) data.fleet_sid = spec.fleetSid;
  if (spec.sessionSid) data.data_session_sid = spec.sessionSid;
  if (spec.sessionStartMs !== undefined) data.data_session_start_time = iso(spec.sessionStartMs);
  if (spec.sessionEndMs !== undefined) data.data_session_end_time = iso(spec.sessionEndMs);
  if (spec.windowStartMs !== undefined)
    data.data_session_update_start_time = iso(spec.windowStartMs);
  if (spec.windowEndMs !== undefined) data.data_session_update_end_time = iso(spec.windowEndMs);
  if (spec.windowDown !== undefined || spec.windowUp !== undefined) {
    const down = spec.windowDown ?? 0;
    const up = spec.windowUp ?? 0;
    data.data_download = down;
    data.data_upload = up;
    data.data_total = down + up;
  }
  if (version >= 2 && (spec.cumulativeDown !== undefined || spec.cumulativeUp !== undefined)) {
    const down = spec.cumulativeDown ?? 0;
    const up = spec.cumulativeUp ?? 0;
    data.data_session_data_download = down;
    data.data_session_data_upload = up;
    data.data_session_data_total = down + up;
  }
  if (spec.error) data.error = spec.error;
  return {
    specversion: "1.0",
    type,
    source:
      envelope === "twilio" ? `/v1/SuperSim/ConnectionEvents/${spec.eventSid}` : "kore-events",
    id: spec.eventSid,
    dataschema:
      envelope === "twilio"
        ? `https://events-schemas.twilio.com/SuperSim.ConnectionEvent/${version}`
        : `https://events-schemas.korewireless.com/SuperSim.ConnectionEvent/${version}`,
    datacontenttype: "application/json",
    time: new Date(spec.timestampMs).toISOString(),
    data,
  };
}
