// Starts Redoc on /api/v1/redoc/ (templates/drf_spectacular/redoc.html): the settings come from
// data attributes, so the page needs no inline script under the Content-Security-Policy.
(function () {
  var el = document.getElementById("redoc-container");
  if (!el || !window.Redoc) return;
  window.Redoc.init(el.dataset.schemaUrl, JSON.parse(el.dataset.settings || "{}"), el);
})();
