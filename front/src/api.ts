// Talking to `clip-retrieval back`: request bodies as clip-front sends them, errors turned into messages, and the
// client-side result filters (duplicate URLs).

import type { SearchState } from "./state";

/** One result as /knn-service and /metadata return it. */
export interface Result {
  id: number;
  similarity?: number;
  caption?: string;
  url?: string;
  image?: string;
  image_path?: string;
  [column: string]: unknown;
}

/** What to search with: the state's text or image URL, or an uploaded image (base64) or an embedding. */
export type QueryInput =
  | { kind: "text"; text: string }
  | { kind: "imageUrl"; url: string }
  | { kind: "image"; base64: string }
  | { kind: "embedding"; embedding: number[] };

/** The /knn-service body for a search. */
export function knnBody(s: SearchState, input: QueryInput): Record<string, unknown> {
  return {
    text: input.kind === "text" ? input.text : null,
    image_url: input.kind === "imageUrl" ? input.url : null,
    image: input.kind === "image" ? input.base64 : null,
    embedding_input: input.kind === "embedding" ? input.embedding : null,
    modality: s.modality,
    num_images: s.numImages,
    num_result_ids: s.numResultIds,
    indice_name: s.index,
    deduplicate: s.deduplicate,
    use_safety_model: s.safeMode,
    use_violence_detector: s.removeViolence,
    aesthetic_score: s.aestheticScore,
    aesthetic_weight: String(s.aestheticWeight),
    use_mclip: false,
  };
}

/** Joins the backend URL and an endpoint path. */
export function endpoint(backend: string, path: string): string {
  return backend.replace(/\/+$/, "") + path;
}

/** A failed call, with the server's JSON message when it sent one. */
export class BackendError extends Error {}

/** POSTs JSON and returns the parsed answer, or throws a [`BackendError`] saying what went wrong. */
export async function postJson<T>(url: string, body: unknown, fetchImpl: typeof fetch = fetch): Promise<T> {
  let response: Response;
  try {
    response = await fetchImpl(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new BackendError(`cannot reach the backend at ${url}: ${(e as Error).message}`);
  }
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: reported below
  }
  if (!response.ok) {
    const message = (parsed as { error?: string } | undefined)?.error ?? text.slice(0, 200);
    throw new BackendError(`the backend answered ${response.status}: ${message}`);
  }
  if (parsed === undefined) throw new BackendError(`the backend answered something other than JSON`);
  return parsed as T;
}

/** Drops results whose URL (or image path) was already seen, keeping the first (best) one. */
export function hideDuplicateUrls(results: Result[]): Result[] {
  const seen = new Set<string>();
  return results.filter((r) => {
    const key = (r.url as string | undefined) ?? (r.image_path as string | undefined);
    if (!key) return true;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Where to show a result's picture from: its inline image, else its URL. */
export function imageSource(r: Result, urlColumn = "url"): string | undefined {
  if (typeof r.image === "string" && r.image) return `data:image/jpeg;base64,${r.image}`;
  const url = r[urlColumn];
  return typeof url === "string" && url ? url : undefined;
}

/** The ids still to fetch metadata for, in pages of `pageSize`, after `shown` results. */
export function nextPage(all: Result[], shown: number, pageSize: number): number[] {
  return all.slice(shown, shown + pageSize).map((r) => r.id);
}
