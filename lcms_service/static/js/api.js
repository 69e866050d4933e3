// The LCMS service's API, as the operator application uses it (see the API contract of issue 11).
//
// Every URL is relative to the document's <base href>, which the service sets to its mount point, so the
// same files work under `lcms serve` (/) and inside Airflow (/lcms/). Every state-changing request carries
// the session's CSRF token (X-CSRF-Token), which /api/auth/me and /api/auth/login hand out.

const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

let csrfToken = null;
let unauthorizedHandler = null;

/** An answer that is not 2xx: `status`, the decoded `body`, and a message a person can read. */
export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** Called with the error when a request other than login/me is answered 401 (the session has ended). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** The absolute URL of `path` (relative to the mount point) with the non-empty `params` as its query. */
export function apiUrl(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.href;
}

/**
 * A tile URL template for MapLibre: `{z}/{x}/{y}` must stay literal, which `URL` would percent-encode,
 * so the template is joined as text to the mount point.
 */
export function tileTemplate(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const base = new URL(".", document.baseURI).href;
  const text = query.toString();
  return base + path + (text ? `?${text}` : "");
}

/** A readable message from an error answer: FastAPI's `detail` (a string or a list of problems). */
export function describeError(status, body) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        if (typeof d === "string") return d;
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${d.msg}` : d.msg || JSON.stringify(d);
      })
      .join("; ");
  }
  return `HTTP ${status}`;
}

async function send(method, path, { params, body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE_METHODS.has(method) && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let resp;
  try {
    resp = await fetch(apiUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store", // the queue and the session must never come from a cache
    });
  } catch (err) {
    throw new ApiError(0, null, `the service cannot be reached (${err.message})`);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, data, describeError(resp.status, data));
  return data;
}

function isCsrfRefusal(err) {
  return err.status === 403 && /csrf/i.test(err.message);
}

/** One API call; a 401 calls the unauthorized handler, a CSRF refusal refreshes the token and retries once. */
export async function request(method, path, options = {}) {
  try {
    return await send(method, path, options);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    const authPath = path === "api/auth/login" || path === "api/auth/me";
    if (err.status === 401 && !authPath && unauthorizedHandler) unauthorizedHandler(err);
    if (UNSAFE_METHODS.has(method) && isCsrfRefusal(err) && !authPath) {
      const me = await send("GET", "api/auth/me");
      setCsrfToken(me.csrf_token);
      return send(method, path, options);
    }
    throw err;
  }
}

export const api = {
  me: () => request("GET", "api/auth/me"),
  login: (name, password) => request("POST", "api/auth/login", { body: { name, password } }),
  logout: () => request("POST", "api/auth/logout"),
  projects: () => request("GET", "api/projects"),
  imageryDates: (season) => request("GET", `api/imagery/${encodeURIComponent(season)}/dates`),
  pixel: (lon, lat, seasons, product) =>
    request("GET", "api/pixel", {
      params: { lon: lon.toFixed(6), lat: lat.toFixed(6), seasons: seasons.join(","), product: product || undefined },
    }),
  changes: (params) => request("GET", "api/changes", { params }),
  change: (id) => request("GET", `api/changes/${encodeURIComponent(id)}`),
  decide: (id, decision) => request("POST", `api/changes/${encodeURIComponent(id)}/decisions`, { body: decision }),
  stats: (params) => request("GET", "api/stats", { params }),
  assessmentDesigns: () => request("GET", "api/assessment/designs"),
  assessment: (season) => request("GET", `api/assessment/${encodeURIComponent(season)}`),
  labelPoint: (season, pointId, label) =>
    request("POST", `api/assessment/${encodeURIComponent(season)}/points/${encodeURIComponent(pointId)}/label`, {
      body: label,
    }),
  exportLabels: (season) => request("POST", `api/assessment/${encodeURIComponent(season)}/export`),
};

/** Tile URL templates of the service's raster and vector tiles. */
export const tiles = {
  map: (season, band, product) =>
    tileTemplate(`api/maps/${encodeURIComponent(season)}/${encodeURIComponent(band)}/tiles/{z}/{x}/{y}.png`, {
      product,
    }),
  imagery: (season, render, date) =>
    tileTemplate(`api/imagery/${encodeURIComponent(season)}/tiles/{z}/{x}/{y}.png`, {
      render,
      date: date || "composite",
    }),
  // Only the properties the map styles use; `rev` changes after a decision so the browser refetches.
  changes: (filters, rev) =>
    tileTemplate("ogc/collections/lcms.changes/tiles/WebMercatorQuad/{z}/{x}/{y}", {
      properties: "id,status",
      ...filters,
      rev: rev || undefined,
    }),
};
