// Batchwatch: the little the server cannot do. Times in the viewer's own
// time zone, copying a batch id, saying when a live refresh failed, the live
// refresh's clock, and Enter in the search box. Everything works without
// it; htmx does the rest. Nothing here is eval'd or inline: the
// Content-Security-Policy allows this file and htmx, nothing else.
(function () {
  "use strict";
  document.documentElement.classList.remove("no-js");

  function pad(n) { return String(n).padStart(2, "0"); }

  // The zone's short name ("CET", "GMT+1"), shown once in headings.
  var zone = (new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
    .formatToParts(new Date()).find(function (part) { return part.type === "timeZoneName"; }) || {}).value || "local";

  // <time datetime="…" data-local> comes from the server in UTC; show it in
  // the viewer's zone instead (YYYY-MM-DD HH:MM, or HH:MM:SS for
  // data-local="time", HH:MM for data-local="hm"), keeping UTC in the tooltip.
  function localiseTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment)) return;
      if (!el.title) el.title = moment.toISOString().slice(0, 19).replace("T", " ") + " UTC";
      var clock = pad(moment.getHours()) + ":" + pad(moment.getMinutes());
      var kind = el.dataset.local;
      el.textContent = kind === "hm" ? clock
        : kind === "time" ? clock + ":" + pad(moment.getSeconds())
        : moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate()) + " " + clock;
    });
    root.querySelectorAll("[data-zone]").forEach(function (el) { el.textContent = zone; });
  }

  function announce(text) {
    var region = document.getElementById("announcer");
    if (region) region.textContent = text;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) return;
    navigator.clipboard.writeText(button.dataset.copy).then(function () {
      button.classList.add("is-copied");
      announce("Copied " + button.dataset.copy);
      setTimeout(function () { button.classList.remove("is-copied"); }, 1500);
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
  });
  document.addEventListener("htmx:load", function (event) {
    localiseTimes(event.target);
  });

  // A failed refresh leaves the last data on screen: say it is not current.
  function setOffline(offline) {
    document.body.classList.toggle("is-offline", offline);
    var note = document.querySelector(".refreshed");
    if (offline && note && !note.dataset.failed) {
      note.dataset.failed = "1";
      note.append(" · last refresh failed, retrying");
    }
  }
  document.addEventListener("htmx:sendError", function () { setOffline(true); });
  document.addEventListener("htmx:responseError", function () { setOffline(true); });
  document.addEventListener("htmx:afterSettle", function () { setOffline(false); });

  // The live refresh: #live-refresh answers "live-refresh" (hx-trigger).
  // Fired every data-refresh-seconds while the tab is visible, and at once
  // when it becomes visible again; the element is swapped with the table,
  // so it is looked up afresh each time.
  var refreshTimer = null;
  function poller() { return document.getElementById("live-refresh"); }
  function refresh(reason) {
    var el = poller();
    if (el && window.htmx) window.htmx.trigger(el, "live-refresh", { reason: reason });
  }
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    var el = poller();
    var seconds = el ? parseInt(el.dataset.refreshSeconds, 10) : 0;
    if (!(seconds > 0)) return;
    refreshTimer = setTimeout(function () {
      if (document.visibilityState === "visible") refresh("poll");
      scheduleRefresh();
    }, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", scheduleRefresh);
  // A view without the poller (a 400) stopped the clock; the next one restarts it.
  document.addEventListener("htmx:afterSettle", function () { if (!refreshTimer) scheduleRefresh(); });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "visible") return;
    refresh("visible");
    scheduleRefresh();
  });

  // Enter in the search box: the search as you type sends the request (once
  // the typing pauses, or at once if the text has not changed), so Enter
  // must not submit the form as well, which sent a second request for the
  // same view. Without JavaScript Enter submits the form, as it should.
  document.addEventListener("change", function (event) {
    // The search box asks by its input event; its change would ask again.
    if (event.target.id === "f-q") event.stopPropagation();
  }, true);
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !event.target.matches("#filters input:not([type=checkbox])")) return;
    event.preventDefault();
    if (event.target.id === "f-q") event.target.dispatchEvent(new Event("input", { bubbles: true }));
  });
})();
