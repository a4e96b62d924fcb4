// henvis console: live alert rows (server-sent events) and deadline countdowns.
// Progressive: every page works without it.
(function () {
  "use strict";
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function tick() {
    var now = Math.floor(Date.now() / 1000);
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      var left = parseInt(el.getAttribute("data-deadline"), 10) - now;
      if (left <= 0) { el.textContent = "0:00"; el.classList.add("due"); return; }
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = (h > 0 ? h + ":" + pad(m) : m) + ":" + pad(s);
    });
  }
  function refresh() {
    fetch("/alerts/rows", { credentials: "include", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var body = document.getElementById("alert-rows");
        if (body) { body.innerHTML = html; }
        var none = document.getElementById("none");
        if (none && html.trim()) { none.remove(); }
        tick();
      })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var live = document.getElementById("live");
    if (!live || !window.EventSource) { return; }
    var source = new EventSource("/alerts/live");
    source.addEventListener("ready", function () { live.textContent = live.getAttribute("data-live"); refresh(); });
    source.addEventListener("alert", refresh);
    source.onerror = function () { live.textContent = live.getAttribute("data-connecting"); };
  });
})();
