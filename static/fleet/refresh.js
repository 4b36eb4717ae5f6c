// While a run is in progress, reload its page every few seconds (no framework, no CDN).
(function () {
  var el = document.querySelector("[data-refresh]");
  if (el) setTimeout(function () { location.reload(); }, 1000 * Number(el.dataset.refresh));
})();
