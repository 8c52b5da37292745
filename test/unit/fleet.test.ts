import { describe, expect, it } from "vitest";
import {
  type FleetObservation,
  markAfter,
  needsReplan,
  replayFleets,
  UNKNOWN,
} from "../../src/ingest/fleet.ts";

// The customer history's rule: which fleet observations call for a full re-plan of their SIM.

describe("needsReplan", () => {
  it.each<[string, boolean, string[], boolean, number, boolean]>([
    ["an observation already recorded changes nothing", false, [], true, 2, false],
    ["a SIM's first observation (usage before it may now be covered)", true, [], false, 1, true],
    ["the next hour of the same fleet", true, ["HFa"], false, 1, false],
    ["a move to another fleet", true, ["HFb"], false, 1, true],
    ["an hour before one already observed (out of order)", true, ["HFa"], true, 1, true],
    ["a second fleet in the same hour", true, ["HFa"], false, 2, true],
    [
      "after an hour that held two fleets, one of them another",
      true,
      ["HFa", "HFb"],
      false,
      1,
      true,
    ],
  ])("%s", (_name, inserted, before, later, same, want) => {
    expect(needsReplan(inserted, before, later, same, "HFa")).toBe(want);
  });
});

describe("markAfter", () => {
  it("remembers the latest hour and its only fleet; an out-of-order one forgets", () => {
    expect(markAfter(7, "HFa", false, 1)).toEqual({ latestHour: 7, latestFleet: "HFa" });
    expect(markAfter(7, "HFa", false, 2)).toEqual({ latestHour: 7, latestFleet: null });
    expect(markAfter(7, "HFa", true, 1)).toBe(UNKNOWN);
  });
});

describe("replayFleets", () => {
  const o = (simSid: string, hour: number, fleetSid: string): FleetObservation => ({
    simSid,
    hour,
    fleetSid,
  });
  it.each<{
    name: string;
    committed: Record<string, { hour: number; fleetSid: string }[]>;
    obs: FleetObservation[];
    insert: string[];
    dirty: string[];
  }>([
    {
      name: "a new SIM is marked once, its next hours only inserted",
      committed: {},
      obs: [o("S1", 1, "A"), o("S1", 2, "A"), o("S1", 2, "A"), o("S1", 3, "A")],
      insert: ["S1@1:A", "S1@2:A", "S1@3:A"],
      dirty: ["S1"],
    },
    {
      name: "a known SIM continuing in its fleet is not marked",
      committed: { S1: [{ hour: 4, fleetSid: "A" }] },
      obs: [o("S1", 5, "A"), o("S1", 6, "A")],
      insert: ["S1@5:A", "S1@6:A"],
      dirty: [],
    },
    {
      name: "a move is marked; an hour already stored is not inserted again",
      committed: { S1: [{ hour: 4, fleetSid: "A" }] },
      obs: [o("S1", 4, "A"), o("S1", 5, "B")],
      insert: ["S1@5:B"],
      dirty: ["S1"],
    },
    {
      name: "an hour before a stored one is out of order",
      committed: {
        S1: [
          { hour: 4, fleetSid: "A" },
          { hour: 6, fleetSid: "A" },
        ],
      },
      obs: [o("S1", 5, "A")],
      insert: ["S1@5:A"],
      dirty: ["S1"],
    },
    {
      name: "an hour before one observed earlier in the same job is out of order too",
      committed: { S2: [{ hour: 1, fleetSid: "A" }] },
      obs: [o("S2", 3, "A"), o("S2", 2, "A")],
      insert: ["S2@3:A", "S2@2:A"],
      dirty: ["S2"],
    },
    {
      name: "SIMs are independent",
      committed: { S1: [{ hour: 1, fleetSid: "A" }] },
      obs: [o("S1", 2, "A"), o("S2", 2, "A")],
      insert: ["S1@2:A", "S2@2:A"],
      dirty: ["S2"],
    },
  ])("$name", ({ committed, obs, insert, dirty }) => {
    const r = replayFleets(new Map(Object.entries(committed)), obs);
    expect(r.insert.map((x) => `${x.simSid}@${x.hour}:${x.fleetSid}`)).toEqual(insert);
    expect(r.dirtySims).toEqual(dirty);
  });
});
