// Thin fetch wrapper for the JSON API: session cookie + CSRF header, uniform error body.

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "error";
    this.details = err.details || {};
  }
}

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

const defaultHeaders = {};

/** A header sent with every API call from this page (e.g. the editor tab's X-Editor-Tab). */
export function setHeader(name, value) { defaultHeaders[name] = value; }

export async function api(method, url, body) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json", ...defaultHeaders } };
  if (method !== "GET") opts.headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(url, opts);
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const get = (url) => api("GET", url);
export const post = (url, body) => api("POST", url, body);
export const patch = (url, body) => api("PATCH", url, body);

/** All pages of a paginated list (or the plain list when the API does not paginate). */
export async function getAll(url) {
  let data = await get(url);
  if (Array.isArray(data)) return data;
  const out = [...(data.results || [])];
  while (data.next) {
    data = await get(data.next);
    out.push(...(data.results || []));
  }
  return out;
}

const TYPED = { uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array,
  uint32: Uint32Array, int32: Int32Array, float32: Float32Array, float64: Float64Array };

/** Raw little-endian pixels -> {shape:[H,W(,3)], data: TypedArray}. */
export async function getPixels(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
  const shape = resp.headers.get("X-Shape").split(",").map(Number);
  const dtype = resp.headers.get("X-Dtype");
  const Ctor = TYPED[dtype];
  if (!Ctor) throw new Error(`unsupported pixel type ${dtype}`);
  const buf = await resp.arrayBuffer();
  return { shape, dtype, data: new Ctor(buf) };  // browsers are little-endian, like the payload
}

/** An 8-bit grey/label PNG -> Uint8Array of its values (no colour management, no premultiplying). */
export async function getPngValues(url, width, height) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) throw new ApiError(resp.status, null);
  const bitmap = await createImageBitmap(await resp.blob(), {
    colorSpaceConversion: "none", premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const out = new Uint8Array(width * height);
  for (let i = 0; i < out.length; i++) out[i] = rgba[i * 4];
  return out;
}

/** Row-major run-length encoding, the API's "rle" mask format. */
export function rleEncode(mask, height, width) {
  const values = [];
  const lengths = [];
  let prev = mask[0];
  let run = 0;
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] === prev) { run++; continue; }
    values.push(prev); lengths.push(run);
    prev = mask[i]; run = 1;
  }
  if (mask.length) { values.push(prev); lengths.push(run); }
  return { format: "rle", size: [height, width], values, lengths };
}

export function bootData() {
  return JSON.parse(document.getElementById("boot").textContent);
}
