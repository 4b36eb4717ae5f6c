// Copy buttons: <button type="button" class="fleet-copy" data-copy="…">. One listener for the
// page, no inline script (the Content-Security-Policy allows scripts from our static files only).
(function () {
  "use strict";

  function fallbackCopy(text) {
    // Clipboard API missing (an insecure origin): a hidden textarea and the copy command.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    let done = false;
    try {
      done = document.execCommand("copy");
    } catch (e) {
      done = false;
    }
    document.body.removeChild(area);
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return fallbackCopy(text);
      });
    }
    return fallbackCopy(text);
  }

  function tell(button, word) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = word;
    button.classList.add("fleet-copied");
    window.setTimeout(function () {
      button.textContent = label;
      button.classList.remove("fleet-copied");
    }, 1500);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest(".fleet-copy");
    if (!button) {
      return;
    }
    event.preventDefault();
    copy(button.dataset.copy || "").then(
      function () { tell(button, "Copied"); },
      function () { tell(button, "Press Ctrl+C"); }
    );
  });
})();
