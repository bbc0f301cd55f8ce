// Talking to the toolrelay API. Keys live in sessionStorage only (gone when the tab closes),
// travel in the Authorization header only (never in a URL), and no cookie is ever set or sent.
// The admin key goes to /admin/* only; the user's key to /v1/* only.

const USER_KEY = "toolrelay.apiKey";
const ADMIN_KEY = "toolrelay.adminKey";

export const session = {
  get user() {
    return sessionStorage.getItem(USER_KEY);
  },
  get admin() {
    return sessionStorage.getItem(ADMIN_KEY);
  },
  /** An empty API key without an admin key means a server running without keys. */
  signIn(user, admin) {
    if (user || !admin) sessionStorage.setItem(USER_KEY, user);
    if (admin) sessionStorage.setItem(ADMIN_KEY, admin);
  },
  signOut() {
    sessionStorage.removeItem(USER_KEY);
    sessionStorage.removeItem(ADMIN_KEY);
  },
  get signedIn() {
    return this.user !== null || this.admin !== null;
  },
};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function request(path, key, { method = "GET", body, signal } = {}) {
  const headers = { accept: "application/json" };
  if (key) headers.authorization = "Bearer " + key;
  if (body !== undefined) headers["content-type"] = "application/json";
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    credentials: "omit",
    cache: "no-store",
    referrerPolicy: "no-referrer",
  });
}

export async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message = body && body.error && body.error.message ? body.error.message : `HTTP ${response.status}`;
  return new ApiError(response.status, message, body);
}

async function json(response) {
  if (!response.ok) throw await readError(response);
  return response.json();
}

/** A call to /v1/* with the user's key; returns the raw Response (for streams). */
export function userFetch(path, options) {
  if (!path.startsWith("/v1/")) throw new Error("the API key goes to /v1/ only");
  if (session.user === null) throw new ApiError(401, "Sign in with an API key to use this page.");
  return request(path, session.user, options);
}

export async function userApi(path, options) {
  return json(await userFetch(path, options));
}

/** A call to /admin/* with the admin key. */
export async function adminApi(path, options) {
  if (!path.startsWith("/admin/")) throw new Error("the admin key goes to /admin/ only");
  if (!session.admin) throw new ApiError(401, "Sign in with the admin key to use this page.");
  return json(await request(path, session.admin, options));
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const text = q.toString();
  return text ? "?" + text : "";
}
