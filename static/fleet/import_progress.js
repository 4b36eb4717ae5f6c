// Keeps an import batch's progress bar current without reloading the page.
(function () {
  "use strict";
  function update(box) {
    fetch(box.dataset.url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) { return; }
        var total = Math.max(p.total, 1);
        box.querySelector(".fleet-progress-ok").style.width = (100 * p.active / total) + "%";
        box.querySelector(".fleet-progress-error").style.width = (100 * p.failed / total) + "%";
        box.querySelector("[role=progressbar]").setAttribute("aria-valuenow", p.tested);
        ["tested", "active", "failed"].forEach(function (k) {
          box.querySelector("[data-key=" + k + "]").textContent = p[k];
        });
        if (p.pending > 0) { setTimeout(function () { update(box); }, 2000); }
      })
      .catch(function () { setTimeout(function () { update(box); }, 5000); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".fleet-progress").forEach(function (box) {
      if (Number(box.dataset.total) > 0) { update(box); }
    });
  });
})();
