/**
 * Conveyor feedback from a web page: send the true label of a prediction the page showed.
 *
 *     import { sendFeedback } from "https://feedback.example.com/client/conveyor-feedback.js";
 *     const outcome = await sendFeedback({
 *       baseUrl: "https://feedback.example.com",
 *       project: "fraud",
 *       token: "cvt_...",          // a `feedback` token limited to this project
 *       requestId: prediction.request_id,
 *       label: "fraud",
 *     });
 *
 * The token is public (anyone viewing the page can read it): issue one with the `feedback` role
 * and `--project`, which lets its holder send labels for that project's predictions and nothing
 * else. The page's origin must be in the project's `feedback.allowed_origins`, or the browser
 * blocks the request.
 *
 * No dependencies and no build step: an ES module for current browsers (fetch, AbortController).
 * @module conveyor-feedback
 */

/** How long a request may take before it is abandoned, unless the caller says otherwise. */
export const DEFAULT_TIMEOUT_MS = 10000;

// What the service accepts (project names and ids), checked here so a page's mistake is told at
// once and in its own words rather than as the service's 422.
const PROJECT_NAME = /^[a-z][a-z0-9-]{1,62}$/;
const MAX_ID_LENGTH = 200;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * What the service answered: the feedback joined to its prediction now (`recorded`), or kept
 * until the prediction reaches the service (`waiting`; it joins then).
 * @typedef {object} FeedbackOutcome
 * @property {string} feedbackId The feedback's id (the one given, else the service's).
 * @property {boolean} joined True when the label was joined to its prediction at once.
 * @property {string[]} recorded Feedback ids joined now.
 * @property {string[]} waiting Feedback ids waiting for their prediction.
 */

/**
 * @typedef {object} FeedbackRequest
 * @property {string} baseUrl The feedback service's address, e.g. "https://feedback.example.com".
 * @property {string} project The project whose prediction is judged.
 * @property {string} token A bearer token with the `feedback` role (or any role that sends feedback).
 * @property {string} requestId The `request_id` of the prediction the page showed.
 * @property {string} label The true label: one of the project's classes.
 * @property {string | null} [feedbackId] The page's own id for this label: sending it again
 *   (a retry) is taken once. Absent (or null): the service gives one.
 * @property {number} [timeoutMs] Abandon the request after this long (default 10 s).
 * @property {AbortSignal} [signal] Abandon the request when this signal aborts.
 */

/**
 * A label the service refused or never answered for.
 *
 * `status` is the HTTP status (0: no answer — the network failed, the browser blocked the
 * request because the project does not allow the page's origin, or it timed out); `reason` is
 * the service's explanation, or `"timeout"`, `"aborted"` or `"network"` when there was no answer.
 */
export class FeedbackError extends Error {
  /**
   * @param {string} message
   * @param {{status: number, reason: string, body?: unknown, cause?: unknown}} details
   */
  constructor(message, { status, reason, body, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "FeedbackError";
    /** @type {number} */
    this.status = status;
    /** @type {string} */
    this.reason = reason;
    /** @type {unknown} The service's answer, as JSON where it was. */
    this.body = body;
  }
}

/**
 * @param {string} name
 * @param {unknown} value
 */
function requireId(name, value) {
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError(`${name} must be a non-empty string`);
  }
  if (value.length > MAX_ID_LENGTH || CONTROL.test(value)) {
    throw new TypeError(`${name} must be at most ${MAX_ID_LENGTH} characters, without control characters`);
  }
}

/**
 * The service's reason in one line, whichever shape its refusal has.
 * @param {unknown} body
 * @param {Response} response
 * @returns {string}
 */
function reasonOf(body, response) {
  const detail = body && typeof body === "object" ? /** @type {any} */ (body).detail : undefined;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // A request that did not validate: each place and why.
    return detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  }
  if (detail && typeof detail === "object") {
    if (Array.isArray(detail.errors)) return detail.errors.map((e) => e.problem).join("; ");
    if (Array.isArray(detail.refused)) return detail.refused.map((e) => e.problem).join("; ");
    if (typeof detail.message === "string") return detail.message;
  }
  return response.statusText || `HTTP ${response.status}`;
}

/**
 * Send one label for a prediction the page showed.
 * @param {FeedbackRequest} request
 * @returns {Promise<FeedbackOutcome>}
 * @throws {FeedbackError} when the service refuses the label (4xx, 5xx) or does not answer.
 * @throws {TypeError} when an argument is not one the service could take.
 */
export async function sendFeedback({
  baseUrl,
  project,
  token,
  requestId,
  label,
  feedbackId,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  signal,
}) {
  if (typeof baseUrl !== "string" || baseUrl.length === 0) {
    throw new TypeError("baseUrl must be the feedback service's address");
  }
  if (typeof project !== "string" || !PROJECT_NAME.test(project)) {
    throw new TypeError("project must be a project name (lower-case letters, digits and -)");
  }
  if (typeof token !== "string" || token.length === 0) {
    throw new TypeError("token must be a bearer token (`conveyor token issue ... --role feedback`)");
  }
  requireId("requestId", requestId);
  requireId("label", label);
  if (feedbackId != null) requireId("feedbackId", feedbackId);
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new TypeError("timeoutMs must be a positive number");
  }

  // Relative to the service's address, which may itself sit under a path (behind a proxy).
  const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  const url = new URL(`projects/${encodeURIComponent(project)}/feedback`, base);
  /** @type {Record<string, string>} */
  const body = { request_id: requestId, label };
  if (feedbackId != null) body.feedback_id = feedbackId;

  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const relay = () => controller.abort();
  if (signal) {
    if (signal.aborted) controller.abort();
    else signal.addEventListener("abort", relay, { once: true });
  }

  let response;
  let text;
  try {
    response = await fetch(url, {
      method: "POST",
      mode: "cors",
      // The token travels in a header: no cookie is sent or needed.
      credentials: "omit",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    text = await response.text();
  } catch (error) {
    if (timedOut) {
      throw new FeedbackError(`no answer from ${url.origin} within ${timeoutMs} ms`, {
        status: 0,
        reason: "timeout",
        cause: error,
      });
    }
    if (controller.signal.aborted) {
      throw new FeedbackError("the request was aborted", { status: 0, reason: "aborted", cause: error });
    }
    throw new FeedbackError(
      `could not reach ${url.origin} (a network failure, or the project does not allow ` +
        `this page's origin ${globalThis.location ? globalThis.location.origin : ""})`,
      { status: 0, reason: "network", cause: error },
    );
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", relay);
  }

  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  if (!response.ok) {
    const reason = reasonOf(parsed, response);
    throw new FeedbackError(`feedback refused (${response.status}): ${reason}`, {
      status: response.status,
      reason,
      body: parsed,
    });
  }
  const recorded = Array.isArray(parsed?.recorded) ? parsed.recorded : [];
  const waiting = Array.isArray(parsed?.waiting) ? parsed.waiting : [];
  return {
    feedbackId: feedbackId ?? recorded[0] ?? waiting[0],
    joined: recorded.length > 0,
    recorded,
    waiting,
  };
}

/**
 * The same, with the service, project and token given once (a page that sends many labels).
 *
 *     const feedback = new FeedbackClient({ baseUrl, project: "fraud", token });
 *     await feedback.send({ requestId, label: "legit" });
 */
export class FeedbackClient {
  /** @param {{baseUrl: string, project: string, token: string, timeoutMs?: number}} options */
  constructor({ baseUrl, project, token, timeoutMs = DEFAULT_TIMEOUT_MS }) {
    this.baseUrl = baseUrl;
    this.project = project;
    this.token = token;
    this.timeoutMs = timeoutMs;
  }

  /**
   * @param {{requestId: string, label: string, feedbackId?: string, signal?: AbortSignal}} feedback
   * @returns {Promise<FeedbackOutcome>}
   */
  send({ requestId, label, feedbackId, signal }) {
    return sendFeedback({
      baseUrl: this.baseUrl,
      project: this.project,
      token: this.token,
      timeoutMs: this.timeoutMs,
      requestId,
      label,
      feedbackId,
      signal,
    });
  }
}
