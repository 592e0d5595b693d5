// The JSON API as the page calls it: the key from localStorage in an Authorization header (never in a
// URL), errors as ApiError carrying the server's {"error": {message, type, param, code}}.

const KEY_STORAGE = "deltatune.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function rememberKey(key) {
  localStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${apiKey()}`, ...extra };
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
  }

  // What the page shows: the server's message, with the field it names when it names one.
  describe() {
    return this.param && !this.message.includes(this.param) ? `${this.param}: ${this.message}` : this.message;
  }
}

export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  return new ApiError(response.status, body);
}

// fetch() a path of the API; returns the parsed JSON body or throws ApiError.
export async function api(path, { method = "GET", json, body, signal } = {}) {
  const headers = authHeaders({ Accept: "application/json" });
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  if (!response.ok) {
    throw await errorOf(response);
  }
  return response.json();
}

// Every item of a list route, following its `after` cursor (`cursor` picks an item's id).
export async function listAll(path, { signal, cursor = (item) => item.id } = {}) {
  const items = [];
  const separator = path.includes("?") ? "&" : "?";
  for (;;) {
    const after = items.length ? `&after=${encodeURIComponent(cursor(items[items.length - 1]))}` : "";
    const page = await api(`${path}${separator}limit=100${after}`, { signal });
    items.push(...page.data);
    if (!page.has_more || page.data.length === 0) {
      return items;
    }
  }
}

export async function uploadFile(file) {
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  return api("/v1/files", { method: "POST", body: form });
}
