/*
 * devdock-notices: a JupyterLab plugin, written as the federated module JupyterLab loads for prebuilt
 * extensions (window._JUPYTERLAB[name] with init() and get()), so that the image needs no Node.js build.
 * It uses only JupyterLab's own commands (apputils:notify, apputils:dismiss-notification), no shared module.
 *
 * Every 20 s (or as often as the server says) it asks devdock's server extension (api/devdock/status; that request does not count as activity)
 * when the server will be stopped for being idle; within the warning time it shows a notice that stays until
 * the user does something, which cancels the stop. With a time limit, the top bar says all the time until when the
 * server may run ("until Tue 14:00", the reason in its tooltip): a plain element, since a Lumino widget would need
 * JupyterLab's shared modules.
 */
(function () {
  var POLL_MS = 20000;
  var plugin = {
    id: "devdock-notices:idle",
    description: "Warns before devdock stops an idle server",
    autoStart: true,
    activate: function (app) {
      var shown = null;
      var noticed = false;
      var base = document.body.dataset.baseUrl ||
        (JSON.parse(document.getElementById("jupyter-config-data").textContent).baseUrl) || "/";
      var every = POLL_MS;
      function schedule() { setTimeout(function () { check(); }, every); }
      function xsrf() {
        // What JupyterLab's own requests send: cookie-authenticated API calls must carry the _xsrf token.
        var m = document.cookie.match("\\b_xsrf=([^;]*)\\b");
        return m ? decodeURIComponent(m[1]) : "";
      }
      function showEnd(status) {
        var el = document.getElementById("devdock-end-time");
        if (!status || !status.ends_at) { if (el) { el.remove(); } return; }
        if (!el) {
          el = document.createElement("span");
          el.id = "devdock-end-time";
          el.style.cssText = "align-self:center;margin:0 8px;font-size:var(--jp-ui-font-size1);" +
            "color:var(--jp-ui-font-color1);white-space:nowrap";
          var bar = document.getElementById("jp-top-bar") || document.getElementById("jp-top-panel");
          (bar || document.body).appendChild(el);
        }
        var end = new Date(status.ends_at);
        var words = end.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
        el.textContent = "Server until " + words;
        el.title = "This server runs until " + end.toLocaleString() + " at the latest (" + status.ends_why +
          "); idle, it stops sooner.";
        el.dataset.endsAt = status.ends_at;
      }
      function check() {
        fetch(base + "api/devdock/status", { credentials: "same-origin", headers: { "X-XSRFToken": xsrf() } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (status) {
            if (status && status.poll_seconds) { every = status.poll_seconds * 1000; }
            if (status && status.notice && !noticed) {
              noticed = true;
              app.commands.execute("apputils:notify", {
                message: status.notice, type: "error", options: { autoClose: false }
              });
            }
            showEnd(status);
            var warn = status && status.warning;
            if (warn && !shown) {
              app.commands.execute("apputils:notify", {
                message: warn,
                type: "warning",
                options: { autoClose: false, data: { devdock: "idle-warning" } }
              }).then(function (id) { shown = id; });
            } else if (!warn && shown) {
              app.commands.execute("apputils:dismiss-notification", { id: shown });
              shown = null;
            }
          })
          .catch(function () {})
          .then(schedule);
      }
      app.restored.then(check);
    }
  };
  var root = typeof window !== "undefined" ? window : self;
  root._JUPYTERLAB = root._JUPYTERLAB || {};
  root._JUPYTERLAB["devdock-notices"] = {
    init: function () { return Promise.resolve(); },
    get: function (module) {
      return Promise.resolve(function () { return { __esModule: true, default: [plugin] }; });
    }
  };
})();
