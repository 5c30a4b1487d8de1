// The inbox's only script: reload the live parts of the page when the server says an
// interaction of the agent's queues changed. Without it every page still works (reload).
(function () {
  "use strict";
  var since = document.body.getAttribute("data-since");
  if (since === null || !window.EventSource) {
    return;
  }
  var status = document.getElementById("live-status");
  var busy = false;

  function refresh() {
    if (busy) {
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          throw new Error("not refreshed");
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var changed = false;
        document.querySelectorAll("[data-live][id]").forEach(function (region) {
          var next = fresh.getElementById(region.id);
          // Only the content: a live region that stays in place is announced.
          if (next && next.innerHTML !== region.innerHTML) {
            region.innerHTML = next.innerHTML;
            changed = true;
          }
        });
        var state = fresh.getElementById("case-state");
        var current = document.getElementById("case-state");
        if (state && current) {
          current.innerHTML = state.innerHTML;
        }
        if (changed && status) {
          status.textContent = "Updated: new messages " + new Date().toLocaleTimeString();
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
      });
  }

  // The server names each event by the change it tells (`id:`): a stream that reconnects
  // says it in Last-Event-ID and hears only of later changes.
  var source = new EventSource("/inbox/events?since=" + encodeURIComponent(since));
  source.addEventListener("changed", refresh);
})();
