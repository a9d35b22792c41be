// devdock's desktop viewer (see desktop.py): noVNC, the Clipboard API, reconnection, size that follows the window.
import RFB from "./novnc/core/rfb.js";

const config = JSON.parse(document.getElementById("devdock-desktop-config").textContent);
const statusText = document.getElementById("status");
const banner = document.getElementById("devdock-banner");
const screen = document.getElementById("screen");
const popover = document.getElementById("clipboard-container");
const clipboardText = document.getElementById("clipboard-text");
const clipboardMode = document.getElementById("clipboard-mode");

const websocketUrl = new URL("../desktop-websockify/", window.location);
websocketUrl.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
const statusUrl = new URL("../api/status", window.location);

let rfb = null;
let connected = false;
let attempt = 0;
let retryTimer = null;
// What the desktop's clipboard holds, as far as this page knows: the last text it sent us or we sent it. The
// browser's clipboard goes to the desktop whenever it differs, so the same text copied here again after the
// desktop copied something else goes again.
let desktopHas = null;

function setState(state, text, bannerHtml) {
  document.body.dataset.state = state;
  statusText.textContent = text;
  banner.hidden = !bannerHtml;
  banner.innerHTML = bannerHtml || "";
}

function hubLink() {
  const hub = config.hub || "/hub/home";
  const a = document.createElement("a");
  a.href = hub;
  a.textContent = "the hub";
  return a.outerHTML;
}

function connect() {
  retryTimer = null;
  if (rfb) return;
  rfb = new RFB(screen, websocketUrl.toString(), {});
  rfb.resizeSession = true; // the session follows the window's size
  rfb.scaleViewport = false;
  rfb.background = "#3a3a3a";
  rfb.addEventListener("connect", () => {
    connected = true;
    attempt = 0;
    setState("connected", "Connected");
    pullFromBrowser();
  });
  rfb.addEventListener("disconnect", () => {
    connected = false;
    rfb = null;
    scheduleReconnect();
  });
  rfb.addEventListener("clipboard", (event) => pushToBrowser(event.detail.text));
}

// Is the server still there? Its own API answers while it runs; once it is stopped, the hub answers instead
// (424, or a redirect to its pages). A proxy that restarts, or no network, is neither: try again.
function xsrfToken() {
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("_xsrf="));
  return cookie ? decodeURIComponent(cookie.slice(6)) : config.xsrf;
}

async function serverState() {
  try {
    const response = await fetch(statusUrl, {
      redirect: "manual",
      cache: "no-store",
      credentials: "same-origin",
      headers: { "X-XSRFToken": xsrfToken() }, // the hub's rule for cookie-authenticated fetches
    });
    if (response.ok) return "running";
    if (response.type === "opaqueredirect" || response.status === 424 || response.status === 404) return "gone";
    return "unknown";
  } catch (e) {
    return "unreachable";
  }
}

async function scheduleReconnect() {
  if (retryTimer || rfb) return;
  if ((await serverState()) === "gone") {
    setState("gone", "Server stopped",
      `Your server has stopped, so this desktop is gone (your files are kept). Start it again from ${hubLink()}.`);
    retryTimer = setTimeout(scheduleReconnectAfterGone, 15000);
    return;
  }
  const delay = Math.min(1000 * 2 ** attempt, 10000);
  attempt += 1;
  setState("reconnecting", "Reconnecting...",
    "The connection to your desktop was lost. Reconnecting by itself; the desktop keeps running meanwhile.");
  retryTimer = setTimeout(connect, delay);
}

// A stopped server may be started again from another tab: then this page reconnects.
async function scheduleReconnectAfterGone() {
  retryTimer = null;
  if ((await serverState()) === "running") connect();
  else retryTimer = setTimeout(scheduleReconnectAfterGone, 15000);
}

function reconnectNow() {
  if (connected || rfb) return;
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  attempt = 0;
  connect();
}
window.addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});

// --- clipboard: the browser's Clipboard API where it is allowed, the popover always ---------------------------

// Only the server's owner shares their clipboard with the desktop. Anyone else looking (an admin helping) would
// otherwise receive what the user copies and hand the user what they copied themselves (a password, a command
// planted for them to paste): they get the popover, when they ask for it.
const ownView = config.ownView !== false;
const clipboardApi = Boolean(ownView && window.isSecureContext && navigator.clipboard && navigator.clipboard.readText);
if (!ownView) {
  clipboardMode.textContent = `clipboard: not shared (${config.owner}'s desktop); use Remote Clipboard`;
} else {
  clipboardMode.textContent = clipboardApi ? "clipboard: shared with this computer" : "clipboard: use Remote Clipboard";
}

async function pushToBrowser(text) {
  desktopHas = text;
  clipboardText.value = text;
  if (!clipboardApi) return;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    clipboardMode.textContent = "clipboard: use Remote Clipboard (the browser did not allow copying)";
  }
}

async function pullFromBrowser() {
  if (!clipboardApi || !rfb || !connected) return;
  try {
    const text = await navigator.clipboard.readText();
    if (text && text !== desktopHas) {
      desktopHas = text;
      clipboardText.value = text;
      rfb.clipboardPasteFrom(text);
    }
  } catch (e) {
    // Not allowed (yet): the popover stays the way in.
  }
}
// What was copied on this computer reaches the desktop when the user comes back to it.
window.addEventListener("focus", pullFromBrowser);
screen.addEventListener("pointerdown", pullFromBrowser, true);
screen.addEventListener("keydown", pullFromBrowser, true);

document.getElementById("clipboard-button").addEventListener("click", (event) => {
  event.preventDefault();
  popover.hidden = !popover.hidden;
});
clipboardText.addEventListener("change", () => {
  desktopHas = clipboardText.value;
  if (rfb) rfb.clipboardPasteFrom(clipboardText.value);
});

// --- files dropped on the desktop go to the home (JupyterLab's contents API: the same home) ---------------------

const contentsUrl = new URL("../api/contents/", window.location);
const CHUNK = 4 * 1024 * 1024;

function base64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function contents(name, init) {
  return fetch(new URL(encodeURIComponent(name), contentsUrl), {
    credentials: "same-origin",
    cache: "no-store",
    ...init,
    headers: { "X-XSRFToken": xsrfToken(), "Content-Type": "application/json" },
  });
}

// A name of its own in the home: "data.csv", else "data (1).csv" ... (nothing there is replaced).
async function freeName(original) {
  const clean = original.replace(/[\/\\]/g, "_").replace(/^\.+/, "_") || "upload";
  const dot = clean.lastIndexOf(".");
  const [stem, ext] = dot > 0 ? [clean.slice(0, dot), clean.slice(dot)] : [clean, ""];
  for (let n = 0; n < 1000; n++) {
    const name = n ? `${stem} (${n})${ext}` : clean;
    const response = await contents(name, { method: "GET" });
    if (response.status === 404) return name;
  }
  throw new Error("no free name");
}

async function upload(file) {
  const name = await freeName(file.name);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const chunks = Math.max(1, Math.ceil(bytes.length / CHUNK));
  for (let i = 0; i < chunks; i++) {
    const model = { type: "file", format: "base64", content: base64(bytes.subarray(i * CHUNK, (i + 1) * CHUNK)) };
    if (chunks > 1) model.chunk = i === chunks - 1 ? -1 : i + 1; // JupyterLab's chunked upload
    const response = await contents(name, { method: "PUT", body: JSON.stringify(model) });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  }
  return name;
}

function say(text) {
  banner.hidden = false;
  banner.textContent = text;
}

screen.addEventListener("dragover", (event) => {
  if (event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files")) event.preventDefault();
});
screen.addEventListener("drop", async (event) => {
  if (!event.dataTransfer || !event.dataTransfer.files.length) return;
  event.preventDefault();
  for (const file of Array.from(event.dataTransfer.files)) {
    say(`Uploading ${file.name} to your home...`);
    try {
      const name = await upload(file);
      say(`Uploaded to your home: ~/${name}`);
      banner.dataset.uploaded = name;
    } catch (e) {
      say(`${file.name} could not be uploaded (${e.message}); nothing in your home was changed.`);
    }
  }
  setTimeout(() => {
    if (connected) banner.hidden = true;
  }, 8000);
});

connect();
