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
let lastFromDesktop = "";
let lastToDesktop = null;

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

const clipboardApi = Boolean(window.isSecureContext && navigator.clipboard && navigator.clipboard.readText);
clipboardMode.textContent = clipboardApi ? "clipboard: shared with this computer" : "clipboard: use Remote Clipboard";

async function pushToBrowser(text) {
  lastFromDesktop = text;
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
    if (text && text !== lastToDesktop && text !== lastFromDesktop) {
      lastToDesktop = text;
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
  lastToDesktop = clipboardText.value;
  if (rfb) rfb.clipboardPasteFrom(clipboardText.value);
});

connect();
