// The consent request's Add form shows the fields of the kind chosen (user, admin, external).
// Without this script every field stays visible, each with its own heading and help.
(function () {
  "use strict";

  function kindOf(form) {
    const checked = form.querySelector("input[name=kind]:checked");
    return checked ? checked.value : "";
  }

  function show(form) {
    const kind = kindOf(form);
    form.querySelectorAll("fieldset[class*='fleet-kind-']").forEach(function (fieldset) {
      const wanted = !kind || fieldset.classList.contains("fleet-kind-" + kind);
      fieldset.hidden = !wanted;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("consentrequest_form");
    if (!form || !form.querySelector("input[name=kind]")) {
      return;
    }
    form.addEventListener("change", function (event) {
      if (event.target.name === "kind") {
        show(form);
      }
    });
    show(form);
  });
})();
