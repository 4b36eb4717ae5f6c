// The dashboard's workspace picker shows the chosen workspace at once (without this script, its
// "Show" button does). No inline handlers: the Content-Security-Policy allows none.
document.addEventListener("change", function (event) {
  if (event.target.matches("select[data-autosubmit]")) {
    event.target.form.submit();
  }
});
