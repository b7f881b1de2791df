// The staff JSON API (/api/...). State-changing calls carry the sign-in session's CSRF token,
// which base.html puts in <meta name="csrf-token">; the cookie itself is HttpOnly.

import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

/** Call the API; resolves to the JSON body, throws ApiError with a message fit for staff. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", t("staff.error.network"));
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    // The sign-in expired or was ended elsewhere: the sign-in page is the only way on.
    location.assign("/login");
  }
  if (!response.ok) {
    const code = (data && data.error) || "error";
    throw new ApiError(response.status, code, (data && data.message) || t("staff.error.generic"));
  }
  return data;
}
