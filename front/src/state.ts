// The search as state: every setting and the query, read from and written to the page URL so a search can be shared.

/** Everything that defines a search and how its results are shown. */
export interface SearchState {
  backend: string;
  index: string;
  text: string;
  imageUrl: string;
  /** Search the image index or the text (caption) index. */
  modality: "image" | "text";
  numImages: number;
  numResultIds: number;
  showCaptions: boolean;
  fullCaptions: boolean;
  showSimilarities: boolean;
  safeMode: boolean;
  removeViolence: boolean;
  hideDuplicateUrls: boolean;
  deduplicate: boolean;
  /** "" for none, else 0..9. */
  aestheticScore: string;
  aestheticWeight: number;
}

/** Defaults as clip-front's. */
export function defaultState(backend = ""): SearchState {
  return {
    backend,
    index: "",
    text: "",
    imageUrl: "",
    modality: "image",
    numImages: 40,
    numResultIds: 3000,
    showCaptions: true,
    fullCaptions: false,
    showSimilarities: false,
    safeMode: true,
    removeViolence: true,
    hideDuplicateUrls: true,
    deduplicate: true,
    aestheticScore: "",
    aestheticWeight: 0.5,
  };
}

const BOOLEAN_KEYS = [
  "showCaptions",
  "fullCaptions",
  "showSimilarities",
  "safeMode",
  "removeViolence",
  "hideDuplicateUrls",
  "deduplicate",
] as const;

/** Reads a state from a URL query string; unknown or malformed values keep their defaults. */
export function stateFromQuery(query: string, defaults: SearchState): SearchState {
  const p = new URLSearchParams(query);
  const s: SearchState = { ...defaults };
  const str = (k: string) => p.get(k);
  if (str("back") !== null) s.backend = str("back")!;
  if (str("index") !== null) s.index = str("index")!;
  if (str("query") !== null) s.text = str("query")!;
  if (str("imageUrl") !== null) s.imageUrl = str("imageUrl")!;
  const modality = str("modality");
  if (modality === "image" || modality === "text") s.modality = modality;
  s.numImages = intIn(str("numImages"), 1, 1000, s.numImages);
  s.numResultIds = intIn(str("numResultIds"), 1, 10000, s.numResultIds);
  for (const k of BOOLEAN_KEYS) {
    const v = str(k);
    if (v === "true" || v === "false") s[k] = v === "true";
  }
  const score = str("aestheticScore");
  if (score === "" || (score !== null && /^[0-9]$/.test(score))) s.aestheticScore = score;
  const weight = Number(str("aestheticWeight"));
  if (str("aestheticWeight") !== null && Number.isFinite(weight) && weight >= 0) s.aestheticWeight = weight;
  return s;
}

/** Writes the settings that differ from the defaults, so shared URLs stay short. */
export function stateToQuery(s: SearchState, defaults: SearchState): string {
  const p = new URLSearchParams();
  const put = (k: string, v: string, d: string) => {
    if (v !== d) p.set(k, v);
  };
  put("back", s.backend, defaults.backend);
  put("index", s.index, defaults.index);
  put("query", s.text, defaults.text);
  put("imageUrl", s.imageUrl, defaults.imageUrl);
  put("modality", s.modality, defaults.modality);
  put("numImages", String(s.numImages), String(defaults.numImages));
  put("numResultIds", String(s.numResultIds), String(defaults.numResultIds));
  for (const k of BOOLEAN_KEYS) put(k, String(s[k]), String(defaults[k]));
  put("aestheticScore", s.aestheticScore, defaults.aestheticScore);
  put("aestheticWeight", String(s.aestheticWeight), String(defaults.aestheticWeight));
  return p.toString();
}

function intIn(v: string | null, min: number, max: number, fallback: number): number {
  if (v === null || !/^\d+$/.test(v)) return fallback;
  const n = Number(v);
  return n >= min && n <= max ? n : fallback;
}
