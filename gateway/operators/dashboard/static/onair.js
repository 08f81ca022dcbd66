/* On-air page: follows the campaign's stream (Server-Sent Events) and updates the tally in
   place. The browser's EventSource reconnects by itself after a drop. Without it, the page
   shows the figures of its load. */
(function () {
  "use strict";
  var box = document.querySelector("[data-onair]");
  if (!box || !window.EventSource) return;
  var texts = box.querySelector("[data-live-text]");
  function field(name) { return box.querySelector('[data-field="' + name + '"]'); }
  function show(name, on) { var el = field(name); if (el) el.hidden = !on; }
  function set(name, text) { var el = field(name); if (el) el.textContent = text; }
  function clock(iso) { var d = new Date(iso); return isNaN(d) ? "" : d.toLocaleTimeString("fr-FR"); }
  var source = new EventSource(box.getAttribute("data-onair"));
  source.onopen = function () { set("live", texts.getAttribute("data-live-text")); };
  source.onerror = function () { set("live", texts.getAttribute("data-lost-text")); };
  source.addEventListener("onair", function (event) {
    var d = JSON.parse(event.data);
    box.classList.toggle("is-suppressed", d.suppressed);
    set("n", d.n === null ? "\u2014" : String(d.n));
    show("too-few", d.suppressed); show("shares", !d.suppressed); show("readout", !d.suppressed);
    set("too-few", d.suppressed ? d.sentence.fr : "");
    set("sentence-fr", d.sentence.fr); set("sentence-bm", d.sentence.bm);
    box.querySelectorAll("[data-value]").forEach(function (row) {
      var p = d.percent ? d.percent[row.getAttribute("data-value")] : null;
      var has = typeof p === "number";
      row.querySelector("[data-pct]").textContent = has ? Math.round(p) + "\u00a0%" : "";
      row.querySelector("rect").setAttribute("width", has ? String(p) : "0");
    });
    set("updated", clock(d.updated_at));
  });
})();
