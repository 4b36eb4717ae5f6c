// While a run is in progress, fetch its page every few seconds and swap in the new content
// (progress, counts, results) without reloading; stop once the run is over. No framework, no CDN.
(function () {
  function schedule() {
    var el = document.querySelector("[data-refresh]");
    if (!el) return;
    setTimeout(function () {
      fetch(location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content-main");
          var current = document.getElementById("content-main");
          if (!fresh || !current) throw new Error("no content");
          current.replaceWith(fresh);
          schedule();
        })
        .catch(function () { location.reload(); });
    }, 1000 * Number(el.dataset.refresh));
  }
  schedule();
})();
