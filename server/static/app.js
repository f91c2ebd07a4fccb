// PeiTu admin page: search, index jobs, upload. Plain JS, no build step.
// All server and model text goes into the page through textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "peitu.adminToken";
const POLL_MS = 500;
const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);
const STATE_NAMES = {
  queued: "排队中", running: "进行中", succeeded: "已完成", failed: "失败", cancelled: "已取消",
};
const PHASE_NAMES = { scan: "扫描", describe: "描述", embed: "向量化" };
const COUNT_NAMES = {
  scanned: "扫描", new: "新增", unchanged: "未变", moved: "移动", removed: "移除",
  described: "描述", embedded: "向量化", failed: "失败",
};

const $ = (id) => document.getElementById(id);

// ---- HTTP -----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function detailText(body) {
  if (!body || body.detail === undefined) return "";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) {
    return body.detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("；");
  }
  return JSON.stringify(body.detail);
}

function errorMessage(status, body) {
  const detail = detailText(body);
  const withDetail = (text) => (detail ? `${text}（${detail}）` : text);
  if (status === 401 || status === 403) return withDetail("管理令牌无效或未填写：请在右上角填写正确的令牌");
  if (status === 409 && body && body.job_id) return withDetail("已有索引任务在运行，请等它结束");
  if (status === 409) return withDetail("现在无法执行这个操作");
  if (status === 413) return withDetail("文件太大，超过了服务器允许的大小");
  if (status === 415) return withDetail("不支持的文件类型，请选择 JPEG、PNG、HEIC 等照片");
  if (status === 422 || status === 400) return withDetail("请求内容有误");
  if (status === 404) return withDetail("找不到");
  if (status === 502) return withDetail("模型服务返回了错误，请稍后再试");
  if (status === 503) return withDetail("模型服务或向量库暂时不可用，请稍后再试");
  if (status >= 500) return withDetail(`服务器出错了（${status}），请稍后再试或查看服务器日志`);
  return withDetail(`请求失败（${status}）`);
}

async function request(method, url, body) {
  const init = { method, headers: authHeaders() };
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
    throw new ApiError(0, "无法连接服务器，请检查网络或服务是否在运行", null);
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("application/json") ? await response.json().catch(() => null) : null;
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, data), data);
  return data;
}

async function fetchBlobUrl(url) {
  // <img src> cannot send the bearer token, so images come through fetch as blobs.
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, null), null);
  return URL.createObjectURL(await response.blob());
}

// ---- small DOM helpers ----------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function showError(box, err) {
  box.textContent = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function hideBox(box) {
  box.hidden = true;
  box.textContent = "";
}

function formatTime(value) {
  if (!value) return "从未";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString("zh-CN");
}

function fillFacts(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value] of pairs) {
    dl.append(el("dt", null, label), el("dd", null, value));
  }
}

// ---- views ----------------------------------------------------------------

function showView() {
  const name = (location.hash || "#search").slice(1);
  const known = document.querySelector(`.view[data-view="${CSS.escape(name)}"]`) ? name : "search";
  for (const view of document.querySelectorAll(".view")) view.hidden = view.dataset.view !== known;
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === known);
  }
  if (known === "admin") refreshStatus();
}

// ---- token ----------------------------------------------------------------

function initToken() {
  const input = $("token-input");
  input.value = localStorage.getItem(TOKEN_KEY) || "";
  $("token-state").textContent = input.value ? "已保存" : "";
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    $("token-state").textContent = token ? "已保存" : "已清除";
    for (const box of document.querySelectorAll(".error[role=alert]")) hideBox(box);
    if (!$("view-admin").hidden) refreshStatus();
  });
}

// ---- search ---------------------------------------------------------------

let blobUrls = [];

function releaseBlobs() {
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls = [];
}

function loadThumbnail(img, photoId) {
  fetchBlobUrl(`/api/photos/${encodeURIComponent(photoId)}/thumbnail`)
    .then((url) => {
      blobUrls.push(url);
      img.src = url;
    })
    .catch(() => img.classList.add("broken"));
}

async function openOriginal(photoId) {
  try {
    const url = await fetchBlobUrl(`/api/photos/${encodeURIComponent(photoId)}/file`);
    blobUrls.push(url);
    window.open(url, "_blank", "noopener");
  } catch (err) {
    showError($("search-error"), err);
  }
}

function resultCard(item) {
  const card = el("article", "card");
  card.dataset.photoId = item.photo_id;
  const img = el("img", "thumb");
  img.alt = item.description || item.path || "照片";
  img.title = "点击查看原图";
  img.addEventListener("click", () => openOriginal(item.photo_id));
  loadThumbnail(img, item.photo_id);
  const head = el("div", "card-head");
  head.append(el("span", "rank", `#${item.rank}`), el("span", "match", `匹配度 ${Math.round(Number(item.match))}`),
    el("span", "score muted", `得分 ${Number(item.score).toFixed(2)}`),
    el("span", "similarity muted", `相似度 ${Number(item.similarity).toFixed(2)}`));
  const body = el("div", "card-body");
  body.append(head, el("p", "reason", item.reason), el("p", "path muted", item.path));
  if (item.description) {
    const more = el("details", "description");
    more.append(el("summary", null, "照片描述"), el("p", null, item.description));
    body.append(more);
  }
  card.append(img, body);
  return card;
}

function showResults(data, imageName) {
  releaseBlobs();
  const grid = $("results");
  const info = $("search-info");
  const notes = [];
  if (data.message) notes.push(data.message);
  if (imageName && data.results.length) {
    notes.push(`与「${imageName}」相似的照片，按相似度排序。`);
  } else if (!data.reranked && data.results.length) {
    notes.push("大模型精排未启用或暂不可用，以下按向量相似度排序。");
  }
  if (!data.results.length && !data.message) notes.push("没有找到合适的照片。");
  info.replaceChildren(...notes.map((text) => el("p", null, text)));
  info.hidden = notes.length === 0;
  $("search-empty").hidden = !(data.nothing_fits && !data.results.length);
  grid.replaceChildren(...data.results.map(resultCard));
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

async function runSearch(action, imageName) {
  const button = $("search-button");
  hideBox($("search-error"));
  button.disabled = true;
  document.body.classList.add("busy");
  try {
    showResults(await action(), imageName);
  } catch (err) {
    showError($("search-error"), err);
  } finally {
    button.disabled = false;
    document.body.classList.remove("busy");
  }
}

function initSearch() {
  $("search-form").addEventListener("submit", (event) => {
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
  $("similar-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    runSearch(() => request("POST", "/api/search/similar", form), file.name);
    event.target.value = "";
  });
}

// ---- admin: status and index jobs -----------------------------------------

let pollTimer = null;
let currentJob = null;

async function refreshStatus() {
  hideBox($("admin-error"));
  try {
    const status = await request("GET", "/api/status");
    $("status-photos").textContent = String(status.photos);
    $("status-files").textContent = String(status.files);
    $("status-last").textContent = formatTime(status.last_index_at);
    $("status-indexing").textContent = status.indexing ? "是" : "否";
    $("status-problem").textContent = status.problem || "";
    $("status-problem").hidden = !status.problem;
    $("status-next").textContent = status.next_scheduled_index_at
      ? formatTime(status.next_scheduled_index_at) : "未设置定时索引";
    if (status.running_job_id && !currentJob) watchJob(status.running_job_id);
  } catch (err) {
    showError($("admin-error"), err);
  }
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
    if (err.status === 401 || err.status === 403) return jobFinished();
  }
  pollTimer = setTimeout(() => pollJob(jobId), POLL_MS);
}

function jobFinished() {
  currentJob = null;
  setIndexButtons(true);
  $("index-cancel").hidden = true;
  refreshStatus();
}

function renderJob(job) {
  const state = $("job-state");
  state.textContent = STATE_NAMES[job.state] || job.state;
  state.className = `state-${job.state}`;
  $("job").dataset.state = job.state;
  renderProgress(job.progress || {}, job.state);
  renderCounts(job.counts || {});
  $("job-failure").textContent = job.error ? `任务失败：${job.error}` : "";
  $("job-failure").hidden = !job.error;
  const errors = job.errors || [];
  $("job-errors").replaceChildren(...errors.map((text) => el("li", null, text)));
  $("job-errors-box").hidden = errors.length === 0;
}

function renderProgress(progress, state) {
  const done = Number(progress.done) || 0;
  const total = Number(progress.total) || 0;
  const bar = $("job-progress");
  bar.max = Math.max(total, 1);
  bar.value = state === "succeeded" ? bar.max : Math.min(done, bar.max);
  $("job-phase").textContent = progress.phase ? `阶段：${PHASE_NAMES[progress.phase] || progress.phase}` : "";
  $("job-progress-text").textContent = total ? `${done} / ${total}` : "";
}

function renderCounts(counts) {
  const rows = [];
  for (const [key, label] of Object.entries(COUNT_NAMES)) {
    if (counts[key] === undefined) continue;
    const row = el("tr");
    row.dataset.count = key;
    row.append(el("th", null, label), el("td", null, counts[key]));
    rows.push(row);
  }
  for (const [reason, count] of Object.entries(counts.skipped || {})) {
    const row = el("tr");
    row.dataset.count = `skipped.${reason}`;
    row.append(el("th", null, `跳过：${reason}`), el("td", null, count));
    rows.push(row);
  }
  $("job-counts").tBodies[0].replaceChildren(...rows);
  $("job-counts").hidden = rows.length === 0;
}

function initAdmin() {
  $("index-start").addEventListener("click", () => startIndex("incremental"));
  $("index-rebuild").addEventListener("click", () => {
    if (confirm("重建索引会用已保存的描述重新向量化全部照片（不再调用视觉模型）。确定吗？")) startIndex("rebuild");
  });
  $("index-cancel").addEventListener("click", cancelIndex);
  $("status-refresh").addEventListener("click", refreshStatus);
}

// ---- upload ---------------------------------------------------------------

let uploadPreviewUrl = null;

function showUpload(data, file) {
  $("upload-message").textContent = data.message || "";
  const pairs = [["保存位置", `图库/${data.path}`], ["尺寸", `${data.width} × ${data.height}`],
    ["照片编号", data.photo_id]];
  fillFacts($("upload-facts"), pairs);
  const follow = $("upload-job");
  follow.hidden = !data.job_id;
  follow.onclick = () => {
    location.hash = "#admin";
    watchJob(data.job_id);
  };
  // The server has a thumbnail only once the photo is indexed: preview the local file instead.
  if (uploadPreviewUrl) URL.revokeObjectURL(uploadPreviewUrl);
  uploadPreviewUrl = URL.createObjectURL(file);
  $("upload-thumb").src = uploadPreviewUrl;
  $("upload-thumb").hidden = false;
  $("upload-result").hidden = false;
}

function initUpload() {
  $("upload-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    $("upload-file-name").textContent = file ? file.name : "未选择文件";
  });
  $("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return;
    hideBox($("upload-error"));
    $("upload-result").hidden = true;
    $("upload-button").disabled = true;
    const form = new FormData();
    form.append("file", file);
    try {
      showUpload(await request("POST", "/api/photos", form), file);
    } catch (err) {
      showError($("upload-error"), err);
    } finally {
      $("upload-button").disabled = false;
    }
  });
}

// ---- start ----------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  initToken();
  initSearch();
  initAdmin();
  initUpload();
  window.addEventListener("hashchange", showView);
  showView();
});
