// The search page: reads the search from the URL, queries `clip-retrieval back`, shows results as a grid with
// metadata fetched page by page while scrolling, and keeps the URL in step with every change.

import "./style.css";
import { BackendError, endpoint, hideDuplicateUrls, imageSource, knnBody, nextPage, postJson, type QueryInput, type Result } from "./api";
import { defaultState, stateFromQuery, stateToQuery, type SearchState } from "./state";

const PAGE = 40;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

let defaults = defaultState(location.origin + "/");
let state: SearchState = defaults;
let urlColumn = "url";
let results: Result[] = [];
let shown = 0;
let uploaded: string | null = null;
let searchId = 0;

/** clip-front's /config.json gives the default backend and index. */
async function loadConfig(): Promise<void> {
  try {
    const r = await fetch("config.json");
    if (r.ok) {
      const c = await r.json();
      defaults = { ...defaults, backend: c.defaultBackend || defaults.backend, index: c.defaultIndex || "" };
      urlColumn = c.urlColumn || urlColumn;
    }
  } catch {
    // served without a config: the page's origin is the backend
  }
}

async function loadIndices(): Promise<void> {
  const select = $<HTMLSelectElement>("index");
  try {
    const r = await fetch(endpoint(state.backend, "/indices-list"));
    const names: string[] = await r.json();
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (!state.index || !names.includes(state.index)) state.index = names[0] ?? "";
    select.value = state.index;
  } catch (e) {
    status(`cannot list the indices of ${state.backend}: ${(e as Error).message}`, true);
  }
}

function status(message: string, error = false): void {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", error);
}

/** Puts the state into the form controls. */
function render(): void {
  $<HTMLInputElement>("text").value = state.text;
  $<HTMLInputElement>("backend").value = state.backend;
  $<HTMLInputElement>("image-url").value = state.imageUrl;
  $<HTMLSelectElement>("modality").value = state.modality;
  $<HTMLInputElement>("num-images").value = String(state.numImages);
  const checks: [string, keyof SearchState][] = [
    ["show-captions", "showCaptions"],
    ["full-captions", "fullCaptions"],
    ["show-similarities", "showSimilarities"],
    ["safe-mode", "safeMode"],
    ["remove-violence", "removeViolence"],
    ["hide-duplicate-urls", "hideDuplicateUrls"],
    ["deduplicate", "deduplicate"],
  ];
  for (const [id, key] of checks) $<HTMLInputElement>(id).checked = state[key] as boolean;
  $<HTMLSelectElement>("aesthetic-score").value = state.aestheticScore;
  $<HTMLInputElement>("aesthetic-weight").value = String(state.aestheticWeight);
}

/** Reads the form controls into the state and the URL. */
function readForm(): void {
  const checked = (id: string) => $<HTMLInputElement>(id).checked;
  state = {
    ...state,
    text: $<HTMLInputElement>("text").value.trim(),
    backend: $<HTMLInputElement>("backend").value.trim() || defaults.backend,
    index: $<HTMLSelectElement>("index").value,
    imageUrl: $<HTMLInputElement>("image-url").value.trim(),
    modality: $<HTMLSelectElement>("modality").value === "text" ? "text" : "image",
    numImages: Math.min(1000, Math.max(1, Number($<HTMLInputElement>("num-images").value) || 40)),
    showCaptions: checked("show-captions"),
    fullCaptions: checked("full-captions"),
    showSimilarities: checked("show-similarities"),
    safeMode: checked("safe-mode"),
    removeViolence: checked("remove-violence"),
    hideDuplicateUrls: checked("hide-duplicate-urls"),
    deduplicate: checked("deduplicate"),
    aestheticScore: $<HTMLSelectElement>("aesthetic-score").value,
    aestheticWeight: Number($<HTMLInputElement>("aesthetic-weight").value) || 0,
  };
  const query = stateToQuery(state, defaults);
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function currentInput(): QueryInput | null {
  if (uploaded) return { kind: "image", base64: uploaded };
  if (state.text) return { kind: "text", text: state.text };
  if (state.imageUrl) return { kind: "imageUrl", url: state.imageUrl };
  return null;
}

async function search(input = currentInput()): Promise<void> {
  if (!input) return;
  const id = ++searchId;
  status("Searching…");
  // Forget the previous results at once: the scroll sentinel must not page through them while this search runs.
  results = [];
  shown = 0;
  $("results").replaceChildren();
  try {
    const found = await postJson<Result[]>(endpoint(state.backend, "/knn-service"), knnBody(state, input));
    if (id !== searchId) return;
    results = state.hideDuplicateUrls ? hideDuplicateUrls(found) : found;
    shown = 0;
    if (results.length === 0) {
      status("No results.");
      return;
    }
    status(`${results.length} results`);
    showMore(found.slice(0, state.numImages));
  } catch (e) {
    if (id === searchId) status(e instanceof BackendError ? e.message : String(e), true);
  }
}

/** Appends the next page: results that came with metadata first, then pages fetched through /metadata. */
async function showMore(withMetadata: Result[] = []): Promise<void> {
  const id = searchId;
  const known = new Map(withMetadata.map((r) => [r.id, r]));
  let page = results.slice(shown, shown + PAGE);
  const missing = nextPage(results, shown, PAGE).filter((id) => !known.has(id));
  if (missing.length) {
    try {
      const rows = await postJson<{ id: number; metadata: Record<string, unknown> }[]>(
        endpoint(state.backend, "/metadata"),
        { indice_name: state.index, ids: missing },
      );
      for (const row of rows) known.set(row.id, { id: row.id, ...row.metadata });
    } catch (e) {
      if (id === searchId) status((e as Error).message, true);
      return;
    }
  }
  // A newer search started while the metadata was loading: its results own the grid.
  if (id !== searchId) return;
  page = page.map((r) => ({ ...known.get(r.id), ...r }));
  shown += page.length;
  $("results").append(...page.map(card));
}

function card(r: Result): HTMLElement {
  const li = document.createElement("li");
  const src = imageSource(r, urlColumn);
  const caption = typeof r.caption === "string" ? r.caption : "";
  if (src) {
    const img = document.createElement("img");
    img.src = src;
    img.alt = caption;
    img.loading = "lazy";
    img.tabIndex = 0;
    img.title = "Search similar images";
    img.onerror = () => li.remove();
    const similar = () => {
      uploaded = null;
      if (r.image) search({ kind: "image", base64: r.image });
      else if (typeof r[urlColumn] === "string") search({ kind: "imageUrl", url: r[urlColumn] as string });
    };
    img.onclick = similar;
    img.onkeydown = (e) => e.key === "Enter" && similar();
    li.append(img);
  }
  if (state.showCaptions && caption) {
    const p = document.createElement("button");
    p.className = "caption" + (state.fullCaptions ? " full" : "");
    p.textContent = caption;
    p.title = "Search this caption";
    p.onclick = () => {
      uploaded = null;
      $<HTMLInputElement>("text").value = caption;
      readForm();
      search();
    };
    li.append(p);
  }
  if (state.showSimilarities && typeof r.similarity === "number") {
    const s = document.createElement("span");
    s.className = "similarity";
    s.textContent = r.similarity.toFixed(4);
    li.append(s);
  }
  return li;
}

async function fileToBase64(file: File): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function useFile(file: File | undefined): Promise<void> {
  if (!file) return;
  uploaded = await fileToBase64(file);
  search();
}

function download(): void {
  const blob = new Blob([JSON.stringify(results, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "results.json";
  a.click();
  URL.revokeObjectURL(a.href);
}

async function main(): Promise<void> {
  await loadConfig();
  state = stateFromQuery(location.search, defaults);
  render();
  await loadIndices();
  $<HTMLFormElement>("search").onsubmit = (e) => {
    e.preventDefault();
    uploaded = null;
    readForm();
    search();
  };
  $("settings").onchange = (e) => {
    // A new image URL replaces an uploaded image as the query.
    if ((e.target as HTMLElement).id === "image-url") uploaded = null;
    readForm();
    if ((e.target as HTMLElement).id === "backend") loadIndices();
    else search();
  };
  $<HTMLInputElement>("image-file").onchange = (e) => useFile((e.target as HTMLInputElement).files?.[0]);
  document.body.ondragover = (e) => e.preventDefault();
  document.body.ondrop = (e) => {
    e.preventDefault();
    useFile(e.dataTransfer?.files?.[0]);
  };
  $("download").onclick = download;
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && shown > 0 && shown < results.length) showMore();
  }).observe($("more"));
  search();
}

main();
