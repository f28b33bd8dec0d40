// Batchwatch: the little the server cannot do. Times in the viewer's own
// time zone, copying a batch id, and saying when a live refresh failed.
// Everything works without it; htmx does the rest.
(function () {
  "use strict";
  document.documentElement.classList.remove("no-js");

  function pad(n) { return String(n).padStart(2, "0"); }

  // The zone's short name ("CET", "GMT+1"), shown once in headings.
  var zone = (new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
    .formatToParts(new Date()).find(function (part) { return part.type === "timeZoneName"; }) || {}).value || "local";

  // <time datetime="…" data-local> comes from the server in UTC; show it in
  // the viewer's zone instead (YYYY-MM-DD HH:MM, or HH:MM:SS for
  // data-local="time"), keeping UTC in the tooltip.
  function localiseTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment)) return;
      if (!el.title) el.title = moment.toISOString().slice(0, 19).replace("T", " ") + " UTC";
      var clock = pad(moment.getHours()) + ":" + pad(moment.getMinutes());
      el.textContent = el.dataset.local === "time"
        ? clock + ":" + pad(moment.getSeconds())
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
})();
