// PeiTu admin page: search, index jobs, upload, checks. Plain JS, no build step.
// All server and model text goes into the page through textContent, never innerHTML.
// A person reads only Chinese: an error shows the server's Chinese `message` (or a Chinese line
// chosen by status code), never the English `detail`, which is for developers and the log.
"use strict";

const TOKEN_KEY = "peitu.adminToken";
const POLL_MS = 500;
const STATUS_POLL_MS = 2000;
const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);
const STATE_NAMES = {
  queued: "排队中", running: "进行中", succeeded: "已完成", failed: "失败", cancelled: "已取消",
};
const KIND_NAMES = {
  incremental: "增量索引", rebuild: "重建索引", upload: "上传后索引", scheduled: "定时索引",
  cli: "命令行索引", "follow-up": "补充索引",
};
const PHASE_NAMES = { scan: "扫描", describe: "描述", embed: "向量化", visual: "视觉特征" };
const SKIP_NAMES = {
  empty: "空文件", truncated: "文件不完整", corrupt: "已损坏或不是照片", too_many_pixels: "像素太多",
  permission_denied: "没有读取权限", too_large: "文件太大", broken_symlink: "失效的链接",
  symlink_loop: "循环链接", not_a_file: "不是文件", not_found: "已不存在", io_error: "读取出错",
};
const UNREACHABLE = "连不上服务器：请检查网络，或服务是否在运行。";
// The server's lines by status code (server/messages.py), for an answer without its own
// `message` (a proxy's error page); loaded at start (`loadStatusLines`), these until then.
const statusLines = {
  by_status: {},
  internal: "服务器出错了，请稍后再试；仍不行请查看服务器日志。",
  other: "请求没有成功，请稍后再试。",
};
const HAS_CJK = /[\u4e00-\u9fff]/;

const $ = (id) => document.getElementById(id);

// ---- HTTP -----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function isAuthError(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403);
}

function authHeaders(token) {
  const sent = token === undefined ? localStorage.getItem(TOKEN_KEY) : token;
  return sent ? { Authorization: `Bearer ${sent}` } : {};
}

function errorMessage(status, body) {
  // The server's Chinese line when it sent one; the status code's line otherwise.
  if (body && typeof body.message === "string" && HAS_CJK.test(body.message)) return body.message;
  if (statusLines.by_status[status]) return statusLines.by_status[status];
  return status >= 500 ? statusLines.internal : statusLines.other;
}

async function loadStatusLines() {
  try {
    const response = await fetch("/messages.json");
    if (response.ok) Object.assign(statusLines, await response.json());
  } catch (err) {
    // no server now: every request says UNREACHABLE until it answers
  }
}

async function readBody(response) {
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") ? response.json().catch(() => null) : null;
}

async function request(method, url, body, token) {
  const init = { method, headers: authHeaders(token) };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, UNREACHABLE, null);
  }
  const data = await readBody(response);
  if (!response.ok) throw failure(new ApiError(response.status, errorMessage(response.status, data), data));
  return data;
}

async function fetchBlob(url) {
  // <img src> cannot send the bearer token, so images come through fetch as blobs.
  let response;
  try {
    response = await fetch(url, { headers: authHeaders() });
  } catch (err) {
    throw new ApiError(0, UNREACHABLE, null);
  }
  if (!response.ok) {
    const data = await readBody(response);
    throw failure(new ApiError(response.status, errorMessage(response.status, data), data));
  }
  return response.blob();
}

function failure(err) {
  if (isAuthError(err)) authFailed();
  return err;
}

// ---- small DOM helpers ----------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function button(text, className, onClick) {
  const node = el("button", className, text);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

function showError(box, err) {
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function hideBox(box) {
  box.hidden = true;
  box.textContent = "";
}

function formatTime(value) {
  if (!value) return "从未";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "–" : date.toLocaleString("zh-CN", { hour12: false });
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} 秒`;
  if (s < 3600) return `${Math.floor(s / 60)} 分 ${s % 60} 秒`;
  return `${Math.floor(s / 3600)} 小时 ${Math.floor((s % 3600) / 60)} 分`;
}

function fillFacts(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value] of pairs) dl.append(el("dt", null, label), el("dd", null, value));
}

function baseName(path) {
  return String(path || "photo").split("/").pop() || "photo";
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// ---- views ----------------------------------------------------------------

function showView() {
  const name = (location.hash || "#search").slice(1);
  const known = document.querySelector(`.view[data-view="${CSS.escape(name)}"]`) ? name : "search";
  for (const view of document.querySelectorAll(".view")) view.hidden = view.dataset.view !== known;
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === known);
  }
  if (known === "admin") {
    refreshStatus();
    refreshHistory();
    if (!$("doctor").children.length) runDoctor();
  }
  if (known === "search") fitGrid();
}

// ---- token ----------------------------------------------------------------

let authBroken = false;

function authFailed() {
  // Whatever was shown was fetched with a token that no longer works: take it all away.
  authBroken = true;
  releaseResults();
  $("token-state").textContent = localStorage.getItem(TOKEN_KEY) ? "令牌无效" : "请填写令牌";
  $("token-state").className = "bad";
  clearAdminFacts();
}

function clearAdminFacts() {
  for (const id of ["status-photos", "status-files", "status-last", "status-indexing", "status-next"]) {
    $(id).textContent = "–";
  }
  $("history").tBodies[0].replaceChildren();
  $("history").hidden = true;
  $("history-empty").hidden = false;
  $("doctor").replaceChildren();
  $("live-job").hidden = true;
}

function initToken() {
  const input = $("token-input");
  input.value = localStorage.getItem(TOKEN_KEY) || "";
  $("token-state").textContent = input.value ? "已保存" : "";
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken(input.value.trim());
  });
}

async function saveToken(token) {
  const state = $("token-state");
  for (const box of document.querySelectorAll(".error[role=alert]")) hideBox(box);
  state.className = "muted";
  state.textContent = "正在验证…";
  try {
    await request("GET", "/api/status", undefined, token);  // proves the token works
  } catch (err) {
    if (isAuthError(err)) {
      localStorage.removeItem(TOKEN_KEY);
      state.textContent = token ? "令牌不对，没有保存" : "服务器要求填写令牌";
      state.className = "bad";
      return;
    }
    state.textContent = "暂时无法验证";  // the server is away: keep the token, try it later
    state.className = "bad";
    if (token) localStorage.setItem(TOKEN_KEY, token);
    return;
  }
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  authBroken = false;
  state.textContent = token ? "已保存" : "已清除";
  state.className = "ok";
  pollStatus();
  if (!$("view-admin").hidden) {
    refreshHistory();
    runDoctor();
  }
}

// ---- search ---------------------------------------------------------------

let blobUrls = [];
let queryPhotoUrl = null;

function releaseResults() {
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls = [];
  $("results").replaceChildren();
  hideBox($("search-info"));
  showQueryPhoto(null);
}

function showQueryPhoto(file) {
  if (queryPhotoUrl) URL.revokeObjectURL(queryPhotoUrl);
  queryPhotoUrl = file ? URL.createObjectURL(file) : null;
  $("query-photo").hidden = !file;
  $("query-photo-img").src = queryPhotoUrl || "";
  $("query-photo-name").textContent = file ? `用来找图的照片：${file.name}` : "";
}

function thumbnailUrl(photoId, size) {
  const id = encodeURIComponent(photoId);
  return `/api/photos/${id}/thumbnail${size ? `?size=${size}` : ""}`;
}

function loadThumbnail(img, photoId) {
  fetchBlob(thumbnailUrl(photoId))
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      blobUrls.push(url);
      img.src = url;
    })
    .catch(() => img.classList.add("broken"));
}

function cardNote(card, text, bad) {
  const note = card.querySelector(".card-note");
  note.textContent = text;
  note.classList.toggle("bad", Boolean(bad));
  note.hidden = !text;
}

async function downloadOriginal(item, card) {
  try {
    const blob = await fetchBlob(`/api/photos/${encodeURIComponent(item.photo_id)}/file`);
    saveBlob(blob, baseName(item.path));
    if (card) cardNote(card, `已下载「${baseName(item.path)}」`);
  } catch (err) {
    if (card) cardNote(card, err.message, true);
    else showError($("search-error"), err);
  }
}

async function pngOf(photoId) {
  // Browsers put only PNG on the clipboard; a large JPEG rendering works for every format.
  const blob = await fetchBlob(thumbnailUrl(photoId, 2048));
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob(
    (png) => (png ? resolve(png) : reject(new Error("图片转换失败"))), "image/png"));
}

function clipboardWorks() {
  return window.isSecureContext && navigator.clipboard && typeof navigator.clipboard.write === "function"
    && typeof window.ClipboardItem === "function";
}

async function copyImage(item, card) {
  if (!clipboardWorks()) return copyFallback(item, card);
  cardNote(card, "正在复制…");
  try {
    // The promise keeps the click's permission while the picture is fetched.
    await navigator.clipboard.write([new ClipboardItem({ "image/png": pngOf(item.photo_id) })]);
    card.dataset.copied = "true";
    cardNote(card, "已复制，可以直接粘贴到微信或微博。");
  } catch (err) {
    if (err instanceof ApiError) return cardNote(card, err.message, true);
    copyFallback(item, card);
  }
}

function copyFallback(item, card) {
  const how = coarsePointer() ? "长按大图" : "在大图上右键";
  cardNote(card, `这个浏览器不让网页直接复制图片（需要 HTTPS 或本机访问）：已打开大图，${how}即可复制或保存。`, true);
  openViewer(item, "浏览器不让网页直接复制：请" + how + "，选「复制图片」或「保存图片」。");
}

function coarsePointer() {
  return window.matchMedia("(pointer: coarse)").matches;
}

function resultCard(item) {
  const card = el("article", "card");
  card.dataset.photoId = item.photo_id;
  const open = el("button", "thumb-button");
  open.type = "button";
  open.title = "查看大图";
  open.setAttribute("aria-label", `查看大图：第 ${item.rank} 张`);
  const img = el("img", "thumb");
  img.alt = item.description || item.path || "照片";
  open.append(img);
  open.addEventListener("click", () => openViewer(item));
  loadThumbnail(img, item.photo_id);
  const head = el("div", "card-head");
  head.append(el("span", "rank", `#${item.rank}`), el("span", "match", scoreLabel(item)));
  if (item.fits === false) head.append(el("span", "closest muted", "最接近，不太合适"));
  const actions = el("div", "card-actions");
  actions.append(button("下载原图", "download", () => downloadOriginal(item, card)),
    button("复制图片", "copy", () => copyImage(item, card)));
  const note = el("p", "card-note");
  note.hidden = true;
  note.setAttribute("aria-live", "polite");
  const body = el("div", "card-body");
  const similar = button("找相似", "find-similar", () => searchLike(item));
  similar.title = "找图库里看起来像这张的照片";
  actions.append(similar);
  body.append(head, el("p", "reason", item.reason), actions, note, el("p", "path muted", item.path));
  if (item.description) {
    const more = el("details", "description");
    more.append(el("summary", null, "照片描述"), el("p", null, item.description));
    body.append(more);
  }
  card.append(open, body);
  return card;
}

// The one score the answer is ordered by: 相似度 for a look-alike, 匹配度 for a text's photo.
function scoreLabel(item) {
  if (item.likeness !== null && item.likeness !== undefined) {
    return `相似度 ${Math.round(Number(item.likeness))}`;
  }
  return `匹配度 ${Math.round(Number(item.match))}`;
}

// A library photo's similar photos; its thumbnail is shown as the query photo.
async function searchLike(item) {
  const path = `/api/photos/${encodeURIComponent(item.photo_id)}/similar`;
  let query = null;
  try {
    const blob = await fetchBlob(thumbnailUrl(item.photo_id));
    query = new File([blob], item.path || "照片", { type: blob.type });
  } catch (err) {
    query = null;  // the search still runs; only the preview is missing
  }
  runSearch(() => request("GET", path), query);
}

// The core's empty-index note names the CLI; a person on this page indexes from this page.
const EMPTY_INDEX_NOTE = "图库里还没有能搜的照片。到「索引管理」点「开始索引」；第一批照片索引好就能搜，不用等全部做完。";

function answerNotes(data) {
  if (!data.notes) return data.message ? [data.message] : [];
  return data.notes.map((note) => (note.kind === "empty_index" ? EMPTY_INDEX_NOTE : note.text));
}

function showResults(data, queryFile) {
  releaseResults();
  const info = $("search-info");
  const notes = answerNotes(data);
  if (queryFile && data.results.length) {
    notes.push(`与「${queryFile.name}」相似的照片，按相似度排序。`);
  }
  // How the photos were ordered (匹配度, a failed or unconfigured reranker) is in the core's
  // notes, which also say a time/place word only when it changed the answer.
  if (!data.results.length && !notes.length) notes.push("没有找到合适的照片。");
  info.replaceChildren(...notes.map((text) => el("p", null, text)));
  if (notes.includes(EMPTY_INDEX_NOTE)) info.append(goToIndexButton());
  info.hidden = notes.length === 0;
  showQueryPhoto(queryFile || null);
  $("search-empty").hidden = !(data.nothing_fits && !data.results.length);
  $("results").replaceChildren(...data.results.map(resultCard));
  fitGrid();
}

function goToIndexButton() {
  return button("去索引管理", null, () => { location.hash = "#admin"; });
}

function clearAnswer() {
  // An error under a new search must not leave the previous search's photos looking like its answer.
  releaseResults();
  $("search-empty").hidden = true;
}

function fitGrid() {
  // As many columns as fit, but spread so that the rows are even: 5 photos are 3 + 2, not 4 + 1.
  const grid = $("results");
  const count = grid.children.length;
  if (!count || !grid.clientWidth) return;
  const gap = 16;
  const fit = Math.max(1, Math.floor((grid.clientWidth + gap) / (220 + gap)));
  const rows = Math.ceil(count / fit);
  const columns = Math.ceil(count / rows);
  grid.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
  grid.style.maxWidth = `${columns * 380}px`;
}

function searchPayload(closest) {
  const payload = { text: $("search-text").value.trim() };
  const topK = parseInt($("search-topk").value, 10);
  if (topK > 0) payload.top_k = topK;
  const timePlace = $("search-timeplace").value;
  if (timePlace) payload.time_place = timePlace;
  if (closest) payload.closest = true;
  return payload;
}

async function runSearch(action, queryFile) {
  const button = $("search-button");
  hideBox($("search-error"));
  button.disabled = true;
  document.body.classList.add("busy");
  try {
    showResults(await action(), queryFile);
  } catch (err) {
    clearAnswer();
    showError($("search-error"), err);
  } finally {
    button.disabled = false;
    document.body.classList.remove("busy");
  }
}

function initSearch() {
  const form = $("search-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const payload = searchPayload(false);
    if (!payload.text) return;
    runSearch(() => request("POST", "/api/recommend", payload));
  });
  $("search-closest").addEventListener("click", () => {
    const payload = searchPayload(true);
    if (!payload.text) return;
    runSearch(() => request("POST", "/api/recommend", payload));
  });
  $("search-text").addEventListener("keydown", (event) => {
    // Enter searches, Shift+Enter is a new line; never while an input method is composing.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    form.requestSubmit();
  });
  $("similar-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const body = new FormData();
    body.append("file", file);
    runSearch(() => request("POST", "/api/search/similar", body), file);
    event.target.value = "";
  });
  window.addEventListener("resize", fitGrid);
}

// ---- the full-screen viewer -----------------------------------------------

let viewerItem = null;
let viewerUrl = null;
let viewerOpener = null;

async function openViewer(item, note) {
  viewerItem = item;
  viewerOpener = document.activeElement;
  $("viewer-hint").textContent = coarsePointer() ? "长按图片可保存或分享" : "右键图片可复制或另存为";
  $("viewer-note").textContent = note || "";
  $("viewer-note").hidden = !note;
  $("viewer-img").alt = item.description || item.path || "照片";
  $("viewer").hidden = false;
  document.body.classList.add("viewing");
  $("viewer-close").focus();
  try {
    const blob = await fetchBlob(thumbnailUrl(item.photo_id, 2048));
    if (viewerItem !== item) return;
    if (viewerUrl) URL.revokeObjectURL(viewerUrl);
    viewerUrl = URL.createObjectURL(blob);
    $("viewer-img").src = viewerUrl;
  } catch (err) {
    $("viewer-note").textContent = err.message;
    $("viewer-note").hidden = false;
  }
}

function closeViewer() {
  viewerItem = null;
  $("viewer").hidden = true;
  $("viewer-img").removeAttribute("src");
  document.body.classList.remove("viewing");
  if (viewerUrl) URL.revokeObjectURL(viewerUrl);
  viewerUrl = null;
  if (viewerOpener && viewerOpener.focus) viewerOpener.focus();
}

function initViewer() {
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer-download").addEventListener("click", () => viewerItem && downloadOriginal(viewerItem, null));
  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) closeViewer();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("viewer").hidden) closeViewer();
  });
}

// ---- admin: status, jobs, history, checks -----------------------------------

let pollTimer = null;
let statusTimer = null;
let currentJob = null;
let statusErrorShown = false;  // the admin error box holds the status poll's own error

async function refreshStatus() {
  try {
    const status = await request("GET", "/api/status");
    // Only the poll's own error goes away when the poll works again: a refused job start
    // (409) stays until the person acts.
    if (statusErrorShown) hideBox($("admin-error"));
    statusErrorShown = false;
    renderStatus(status);
  } catch (err) {
    showError($("admin-error"), err);
    statusErrorShown = true;
  }
}

function renderStatus(status) {
  $("status-photos").textContent = String(status.photos);
  $("status-files").textContent = String(status.files);
  $("status-last").textContent = formatTime(status.last_index_at);
  $("status-indexing").textContent = status.indexing ? "是" : "否";
  $("status-problem").textContent = status.problem ? "索引和现在的向量模型不一致：请点「重建索引」。" : "";
  $("status-problem").hidden = !status.problem;
  $("status-next").textContent = status.next_scheduled_index_at
    ? formatTime(status.next_scheduled_index_at) : "未设置定时索引";
  if (status.running_job_id && currentJob !== status.running_job_id) watchJob(status.running_job_id);
  if (!status.running_job_id && !currentJob) $("live-job").hidden = true;
}

async function pollStatus() {
  // Every tab follows the index: a job started anywhere (this page, another browser, the CLI,
  // the scheduler, an upload) shows up within a couple of seconds.
  clearTimeout(statusTimer);
  if (authBroken) return;
  try {
    renderStatus(await request("GET", "/api/status"));
  } catch (err) {
    if (isAuthError(err)) return;  // wait for a new token rather than knock again and again
  }
  statusTimer = setTimeout(pollStatus, STATUS_POLL_MS);
}

function setIndexButtons(enabled) {
  $("index-start").disabled = !enabled;
  $("index-rebuild").disabled = !enabled;
}

async function startIndex(mode) {
  hideBox($("admin-error"));
  setIndexButtons(false);
  try {
    const created = await request("POST", "/api/index/jobs", { mode });
    watchJob(created.job_id);
  } catch (err) {
    showError($("admin-error"), err);
    statusErrorShown = false;
    if (err.status === 409 && err.body && err.body.job_id) watchJob(err.body.job_id);
    else setIndexButtons(true);
  }
}

async function cancelIndex() {
  if (!currentJob) return;
  try {
    await request("POST", `/api/index/jobs/${encodeURIComponent(currentJob)}/cancel`);
  } catch (err) {
    showError($("admin-error"), err);
  }
}

function watchJob(jobId) {
  currentJob = jobId;
  clearTimeout(pollTimer);
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  setIndexButtons(false);
  $("index-cancel").hidden = false;
  pollJob(jobId);
}

async function pollJob(jobId) {
  if (currentJob !== jobId) return;
  try {
    const job = await request("GET", `/api/index/jobs/${encodeURIComponent(jobId)}`);
    if (currentJob !== jobId) return;
    renderJob(job);
    if (FINAL_STATES.has(job.state)) return jobFinished();
  } catch (err) {
    if (err.status === 404) {
      // Only recent jobs are kept, and a job of another process vanishes when it ends.
      $("job-state").textContent = "已结束";
      $("job").dataset.state = "gone";
      return jobFinished();
    }
    showError($("admin-error"), err);
    if (isAuthError(err)) return jobFinished();
  }
  pollTimer = setTimeout(() => pollJob(jobId), POLL_MS);
}

function jobFinished() {
  currentJob = null;
  setIndexButtons(true);
  $("index-cancel").hidden = true;
  $("live-job").hidden = true;
  if (!authBroken) {
    refreshStatus();
    refreshHistory();
    // A job of another process (the CLI) lets the index lock go a moment before its line
    // lands in the history: ask once more, so its row does not stay "进行中" or missing.
    setTimeout(() => { if (!authBroken) refreshHistory(); }, STATUS_POLL_MS);
  }
}

function renderJob(job) {
  const state = $("job-state");
  state.textContent = STATE_NAMES[job.state] || job.state;
  state.className = `state-${job.state}`;
  $("job").dataset.state = job.state;
  $("job").dataset.kind = job.kind || "";
  $("job-kind").textContent = KIND_NAMES[job.kind] || "索引任务";
  $("index-cancel").hidden = FINAL_STATES.has(job.state) || job.kind === "cli";
  renderProgress(job);
  renderTimes(job);
  renderCounts(job.counts);
  $("job-failure").textContent = job.error ? `任务失败：${job.error_message || "详情见服务器日志。"}` : "";
  $("job-failure").hidden = !job.error;
  const errors = job.errors || [];
  $("job-errors").replaceChildren(...errors.map((line) => el("li", null, failedPhotoLine(line))));
  $("job-errors-box").hidden = errors.length === 0;
  renderLiveJob(job);
}

function failedPhotoLine(line) {
  const path = String(line).split(": ")[0];
  return `${path}：没能描述这张照片（原因见服务器日志）`;
}

function renderLiveJob(job) {
  const live = $("live-job");
  const running = !FINAL_STATES.has(job.state);
  live.hidden = !running;
  if (!running) return;
  const progress = job.progress || {};
  const phase = PHASE_NAMES[progress.phase] || "准备";
  const numbers = progress.total ? ` ${progress.done}/${progress.total}` : "";
  live.textContent = `${KIND_NAMES[job.kind] || "索引"}中：${phase}${numbers}`;
}

function renderProgress(job) {
  const progress = job.progress || {};
  const done = Number(progress.done) || 0;
  const total = Number(progress.total) || 0;
  const bar = $("job-progress");
  bar.max = Math.max(total, 1);
  bar.value = job.state === "succeeded" ? bar.max : Math.min(done, bar.max);
  $("job-phase").textContent = progress.phase ? `阶段：${PHASE_NAMES[progress.phase] || progress.phase}` : "";
  $("job-progress-text").textContent = total ? `${done} / ${total}` : (FINAL_STATES.has(job.state) ? "" : "正在准备…");
}

function renderTimes(job) {
  const pairs = [["开始于", formatTime(job.started_at || job.created_at)], ["已用时", formatDuration(job.elapsed_s)]];
  if (job.rate_per_s) pairs.push(["速度", `${job.rate_per_s.toFixed(job.rate_per_s < 10 ? 1 : 0)} 张/秒`]);
  // eta_s covers the phases still to come (describing, then embedding and the visual pass), not just this one.
  if (!FINAL_STATES.has(job.state)) pairs.push(["预计全部完成还需", job.eta_s === null || job.eta_s === undefined ? "估算中…" : formatDuration(job.eta_s)]);
  fillFacts($("job-times"), pairs);
}

function countRow(key, label, value, note) {
  const row = el("tr");
  row.dataset.count = key;
  row.append(el("th", null, label), el("td", null, value), el("td", "muted", note || ""));
  return row;
}

function renderCounts(counts) {
  // Three lines whose numbers add up: what the scan found, what needed a description, what was embedded.
  const box = $("job-counts");
  if (!counts) {
    box.replaceChildren();
    box.hidden = true;
    return;
  }
  const skipped = Object.entries(counts.skipped || {});
  const skippedTotal = skipped.reduce((sum, [, n]) => sum + n, 0);
  const toDescribe = counts.described + counts.failed;
  const older = Math.max(0, toDescribe - counts.new);
  const rows = [
    countRow("scanned", "扫描", counts.scanned,
      `= 新增 ${counts.new} + 未变 ${counts.unchanged} + 移动 ${counts.moved}`),
    countRow("new", "新增", counts.new), countRow("unchanged", "未变", counts.unchanged),
    countRow("moved", "移动", counts.moved),
    countRow("removed", "移除", counts.removed, "已不在图库里的照片"),
    countRow("described", "描述", counts.described,
      `需要描述 ${toDescribe} 张 = 成功 ${counts.described} + 失败 ${counts.failed}` +
      (older ? `（其中 ${older} 张是以前没有描述完的）` : "")),
    countRow("failed", "失败", counts.failed),
    countRow("embedded", "向量化", counts.embedded, "有了新描述、可以被找到的照片"),
  ];
  if (skippedTotal) rows.splice(1, 0, countRow("skipped", "跳过", skippedTotal, "读不了的文件，不算在扫描里"));
  for (const [reason, count] of skipped) {
    rows.push(countRow(`skipped.${reason}`, `跳过：${SKIP_NAMES[reason] || "其他原因"}`, count));
  }
  const table = el("table", "counts");
  table.append(el("tbody"));
  table.tBodies[0].append(...rows);
  box.replaceChildren(table);
  box.hidden = false;
}

async function refreshHistory() {
  try {
    const data = await request("GET", "/api/index/jobs");
    renderHistory(data.jobs.slice(0, 20));
  } catch (err) {
    if (!isAuthError(err)) showError($("admin-error"), err);
  }
}

function renderHistory(jobs) {
  const rows = jobs.map((job) => {
    const row = el("tr");
    row.dataset.jobId = job.job_id;
    row.dataset.kind = job.kind || "";
    const c = job.counts || {};
    const cells = [KIND_NAMES[job.kind] || "索引", formatTime(job.started_at || job.created_at),
      formatDuration(job.elapsed_s), STATE_NAMES[job.state] || job.state,
      c.new ?? "–", c.described ?? "–", c.embedded ?? "–", c.failed ?? "–"];
    row.append(...cells.map((text) => el("td", null, text)));
    return row;
  });
  $("history").tBodies[0].replaceChildren(...rows);
  $("history").hidden = rows.length === 0;
  $("history-empty").hidden = rows.length > 0;
}

async function runDoctor() {
  const list = $("doctor");
  $("doctor-run").disabled = true;
  try {
    const data = await request("GET", "/api/doctor");
    list.replaceChildren(...data.checks.map((check) => {
      const item = el("li", `check check-${check.level}`);
      item.dataset.check = check.name;
      const mark = { ok: "✓", warn: "!", fail: "✗" }[check.level] || "·";
      item.append(el("span", "check-mark", mark), el("strong", null, check.title), el("span", null, check.message));
      return item;
    }));
  } catch (err) {
    if (!isAuthError(err)) showError($("admin-error"), err);
  } finally {
    $("doctor-run").disabled = false;
  }
}

function initAdmin() {
  $("index-start").addEventListener("click", () => startIndex("incremental"));
  $("index-rebuild").addEventListener("click", () => {
    if (confirm("重建索引会用已保存的描述重新向量化全部照片（不再调用视觉模型）。确定吗？")) startIndex("rebuild");
  });
  $("index-cancel").addEventListener("click", cancelIndex);
  $("status-refresh").addEventListener("click", () => {
    refreshStatus();
    refreshHistory();
  });
  $("doctor-run").addEventListener("click", runDoctor);
  $("live-job").addEventListener("click", () => { location.hash = "#admin"; });
}

// ---- upload ---------------------------------------------------------------

const UPLOAD_OUTCOMES = {
  started: "已保存，正在建立索引，稍后就能找到。",
  queued: "已保存；正在运行的索引任务结束后，会再索引一次新照片。",
  busy: "已保存；另一个进程正在索引，新照片会在下一次索引时加入。",
};
const uploadQueue = [];
let uploading = false;

function sendWithProgress(url, body, onProgress) {
  // fetch() cannot report upload progress; XMLHttpRequest can.
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    xhr.send(body);
  });
}

function uploadItem(file) {
  const item = el("li", "upload-item");
  item.dataset.state = "waiting";
  const preview = el("img", "upload-thumb");
  preview.alt = "";
  preview.addEventListener("error", () => preview.classList.add("broken"));  // not an image
  preview.src = URL.createObjectURL(file);  // the server has a thumbnail only once indexed
  const info = el("div", "upload-info");
  const bar = el("progress", "upload-progress");
  bar.max = 1;
  bar.value = 0;
  info.append(el("p", "upload-name", file.name), bar, el("p", "upload-status muted", "等待上传"));
  item.append(preview, info);
  return item;
}

function setUploadState(item, state, text) {
  item.dataset.state = state;
  const status = item.querySelector(".upload-status");
  status.textContent = text;
  status.className = `upload-status ${state === "failed" ? "bad" : state === "done" ? "ok" : "muted"}`;
}

function uploadDone(item, data) {
  const bar = item.querySelector(".upload-progress");
  bar.value = 1;
  setUploadState(item, "done", UPLOAD_OUTCOMES[data.status] || "已保存到图库。");
  item.dataset.photoId = data.photo_id;
  const facts = el("dl", "facts upload-facts");
  fillFacts(facts, [["保存位置", `图库/${data.path}`], ["尺寸", `${data.width} × ${data.height}`],
    ["照片编号", data.photo_id]]);
  item.querySelector(".upload-info").append(facts);
  if (data.job_id) {
    item.querySelector(".upload-info").append(button("查看索引进度", "upload-job", () => {
      location.hash = "#admin";
      watchJob(data.job_id);
    }));
  }
}

async function uploadOne(file, item) {
  setUploadState(item, "uploading", "正在上传…");
  const bar = item.querySelector(".upload-progress");
  const body = new FormData();
  body.append("file", file);
  const answer = await sendWithProgress("/api/photos", body, (part) => {
    bar.value = part;
    setUploadState(item, "uploading", `正在上传 ${Math.round(part * 100)}%`);
  });
  if (answer.status >= 200 && answer.status < 300) return uploadDone(item, answer.body || {});
  const err = failure(new ApiError(answer.status, errorMessage(answer.status, answer.body), answer.body));
  setUploadState(item, "failed", `没有上传：${err.message}`);
}

function queueUploads(files) {
  const images = [...files];
  if (!images.length) return;
  hideBox($("upload-error"));
  const list = $("upload-list");
  for (const file of images) {
    const item = uploadItem(file);
    list.prepend(item);
    uploadQueue.push([file, item]);
  }
  drainUploads();
}

async function drainUploads() {
  if (uploading) return;
  uploading = true;
  try {
    while (uploadQueue.length) {
      const [file, item] = uploadQueue.shift();
      await uploadOne(file, item);
    }
  } finally {
    uploading = false;
  }
  pollStatus();
}

function initUpload() {
  $("upload-file").addEventListener("change", (event) => {
    queueUploads(event.target.files);
    event.target.value = "";
  });
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    queueUploads(event.dataTransfer ? event.dataTransfer.files : []);
  });
  // A photo dropped beside the zone must not replace the page with the photo.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// ---- start ----------------------------------------------------------------

loadStatusLines();

document.addEventListener("DOMContentLoaded", () => {
  initToken();
  initSearch();
  initViewer();
  initAdmin();
  initUpload();
  window.addEventListener("hashchange", showView);
  showView();
  pollStatus();
});
