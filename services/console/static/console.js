// The console's live part: identity events as they happen (server-sent events; the browser
// reconnects by itself and resumes after the last event), the overview's identity table kept
// current, and a confirmation before forms that cannot be undone. No inline scripts: the pages'
// Content-Security-Policy allows none.
(function () {
  "use strict";

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.dataset.confirm)) { e.preventDefault(); }
    });
  });

  var list = document.getElementById("events");
  if (!list || !window.EventSource) { return; }
  var state = document.getElementById("live-state");
  var refreshing = null;

  // The overview's identities, re-read from the server a moment after they change.
  function refreshIdentities() {
    if (list.dataset.refresh !== "identities" || refreshing) { return; }
    refreshing = setTimeout(function () {
      refreshing = null;
      fetch("/", { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["identities", "identity-count", "cameras"].forEach(function (id) {
          var now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next) { now.replaceWith(next); }
        });
      }).catch(function () {});
    }, 1000);
  }

  var source = new EventSource("/events");
  source.onopen = function () { if (state) { state.classList.add("on"); } };
  source.onerror = function () { if (state) { state.classList.remove("on"); } };
  source.onmessage = function (message) {
    var e;
    try { e = JSON.parse(message.data); } catch (err) { return; }
    var item = document.createElement("li");
    item.className = "event " + e.kind;
    item.dataset.identity = e.identity_id;
    item.textContent = new Date(e.at_ms).toISOString().substring(11, 19) + "  " + e.text;
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 100) { list.removeChild(list.lastChild); }
    refreshIdentities();
  };
})();
