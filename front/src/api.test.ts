// Request bodies as clip-front sends them, error messages, and the client-side result helpers.
import { describe, expect, it } from "vitest";
import { BackendError, endpoint, hideDuplicateUrls, imageSource, knnBody, nextPage, postJson } from "./api";
import { defaultState } from "./state";

describe("knn request", () => {
  it("carries the settings and exactly one input", () => {
    const s = { ...defaultState(), index: "demo", aestheticScore: "9", safeMode: false };
    const body = knnBody(s, { kind: "text", text: "a cat" });
    expect(body).toMatchObject({
      text: "a cat",
      image: null,
      image_url: null,
      embedding_input: null,
      indice_name: "demo",
      modality: "image",
      num_images: 40,
      num_result_ids: 3000,
      deduplicate: true,
      use_safety_model: false,
      use_violence_detector: true,
      aesthetic_score: "9",
      aesthetic_weight: "0.5",
    });
    expect(knnBody(s, { kind: "image", base64: "AAA" }).image).toBe("AAA");
    expect(knnBody(s, { kind: "imageUrl", url: "http://x/a.jpg" }).text).toBeNull();
  });

  it("joins backend and path", () => {
    expect(endpoint("http://h:1/", "/knn-service")).toBe("http://h:1/knn-service");
    expect(endpoint("http://h:1", "/metadata")).toBe("http://h:1/metadata");
  });
});

describe("backend errors", () => {
  const answer = (status: number, body: string) =>
    (async () => new Response(body, { status })) as unknown as typeof fetch;

  it("reports the server's JSON message", async () => {
    await expect(postJson("http://h/knn-service", {}, answer(400, '{"error": "image: not valid base64"}'))).rejects.toThrow(
      "the backend answered 400: image: not valid base64",
    );
  });

  it("reports unreachable backends and non-JSON answers", async () => {
    const down = (async () => {
      throw new TypeError("Failed to fetch");
    }) as unknown as typeof fetch;
    await expect(postJson("http://h/x", {}, down)).rejects.toBeInstanceOf(BackendError);
    await expect(postJson("http://h/x", {}, answer(200, "<html>"))).rejects.toThrow("other than JSON");
    expect(await postJson("http://h/x", {}, answer(200, "[1]"))).toEqual([1]);
  });
});

describe("results", () => {
  it("hides repeated URLs, keeping the best", () => {
    const r = [
      { id: 1, url: "a" },
      { id: 2, url: "b" },
      { id: 3, url: "a" },
      { id: 4 },
    ];
    expect(hideDuplicateUrls(r).map((x) => x.id)).toEqual([1, 2, 4]);
  });

  it("prefers the inline image and pages ids", () => {
    expect(imageSource({ id: 1, image: "Zm9v", url: "u" })).toBe("data:image/jpeg;base64,Zm9v");
    expect(imageSource({ id: 1, url: "http://x/a.jpg" })).toBe("http://x/a.jpg");
    expect(imageSource({ id: 1 })).toBeUndefined();
    const all = Array.from({ length: 10 }, (_, i) => ({ id: i * 10 }));
    expect(nextPage(all, 4, 3)).toEqual([40, 50, 60]);
  });
});
