// Small behaviours of Fleet's admin pages, bound here rather than in inline handlers so that the
// Content-Security-Policy needs no 'unsafe-inline' for scripts:
//   <select data-autosubmit>   submits its form when changed (the dashboard's workspace picker)
//   <input data-select-on-click>  selects its whole value when clicked (links and keys to copy)
document.addEventListener("change", function (event) {
  var el = event.target;
  if (el.matches && el.matches("[data-autosubmit]") && el.form) el.form.submit();
});
document.addEventListener("click", function (event) {
  var el = event.target;
  if (el.matches && el.matches("[data-select-on-click]")) el.select();
});
