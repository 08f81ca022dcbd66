/* Progress page: asks the status every few seconds and updates the figures in place,
   until the broadcast is done or cancelled. Without it: the Actualiser link. */
(function () {
  "use strict";
  var box = document.querySelector("[data-progress]");
  if (!box || box.hasAttribute("data-final")) return;
  var every = (parseInt(box.getAttribute("data-every"), 10) || 3) * 1000;
  var failures = 0;
  function fmt(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f"); }
  function tick() {
    fetch(box.getAttribute("data-url"),
          { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (d) {
        failures = 0;
        box.querySelectorAll("[data-count]").forEach(function (el) {
          var k = el.getAttribute("data-count");
          if (k in d.counts) el.textContent = fmt(d.counts[k]);
        });
        var bar = box.querySelector("[data-bar]");
        bar.max = d.counts.recipients || 1;
        bar.value = d.counts.delivered;
        var tag = box.querySelector("[data-status]");
        tag.textContent = d.status_label;
        tag.className = "tag tag-" + d.status;
        box.querySelector("[data-updated]").textContent = d.updated;
        if (d.final) {
          box.setAttribute("data-final", "");
          var cancel = document.querySelector("[data-cancel]");
          if (cancel) cancel.hidden = true;
          return;
        }
        setTimeout(tick, every);
      })
      .catch(function () { failures += 1; setTimeout(tick, every * Math.min(failures + 1, 10)); });
  }
  setTimeout(tick, every);
})();
