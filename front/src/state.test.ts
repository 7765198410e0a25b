// URL state: round trips, short URLs, and malformed values falling back to defaults.
import { describe, expect, it } from "vitest";
import { defaultState, stateFromQuery, stateToQuery } from "./state";

describe("search state in the URL", () => {
  const defaults = defaultState("http://localhost:1234/");

  it("round-trips every setting", () => {
    const s = {
      ...defaults,
      index: "laion",
      text: "a red circle & more",
      modality: "text" as const,
      numImages: 12,
      numResultIds: 500,
      showSimilarities: true,
      safeMode: false,
      aestheticScore: "7",
      aestheticWeight: 0.25,
    };
    expect(stateFromQuery(stateToQuery(s, defaults), defaults)).toEqual(s);
  });

  it("writes only what differs from the defaults", () => {
    expect(stateToQuery(defaults, defaults)).toBe("");
    expect(stateToQuery({ ...defaults, text: "cat" }, defaults)).toBe("query=cat");
  });

  it("keeps defaults for malformed values", () => {
    const s = stateFromQuery("numImages=-4&modality=audio&safeMode=maybe&aestheticScore=12&aestheticWeight=x", defaults);
    expect(s).toEqual(defaults);
  });
});
