// listing-bridge dashboard: keeps each page's live block fresh and sends operator actions to
// the JSON API. Plain JavaScript, no build step.
"use strict";

const REFRESH_MS = 2000;
const CONFIRM_MS = 6000;
let busy = 0; // actions in flight or waiting for a confirming click: don't swap the DOM then

function live() { return document.getElementById("live"); }

function flash(text, kind) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = kind;
}

async function refresh() {
  if (busy || document.hidden || !live()) return;
  try {
    const res = await fetch(location.href, {headers: {"X-Live": "1"}, credentials: "same-origin"});
    if (!res.ok) throw new Error(await reason(res));
    if (busy) return;
    const checked = new Set([...live().querySelectorAll("input[name=item]:checked")].map(i => i.value));
    live().innerHTML = await res.text();
    live().querySelectorAll("input[name=item]").forEach(i => { i.checked = checked.has(i.value); });
    const count = res.headers.get("X-Problem-Count");
    const badge = document.getElementById("problem-count");
    if (badge && count !== null) { badge.textContent = count; badge.classList.toggle("bad", count !== "0"); }
    document.getElementById("live-state").textContent = "live · " + new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Date.now());
  } catch (err) {
    document.getElementById("live-state").textContent = "not updating (" + err.message + ")";
  }
}

// Why a refresh failed: a 503 page says what is wrong (Redis away) in its paragraph.
async function reason(res) {
  const said = new DOMParser().parseFromString(await res.text(), "text/html").querySelector("p");
  return said ? `${res.status}: ${said.textContent}` : String(res.status);
}

function describe(answer) {
  if (answer.error) return answer.error.message;
  if (answer.released) return `Released: ${answer.released.deletions.length} deletion(s) will be sent.`;
  if (answer.discarded !== undefined) return typeof answer.discarded === "number"
    ? `Discarded ${answer.discarded} listing(s).` : "Held sync discarded.";
  if (answer.retried !== undefined) return `Retrying ${answer.retried} listing(s).`;
  if (answer.tenant) return `${answer.tenant}: ${answer.targets.length} target(s) ${answer.state === "paused" ? "paused" : "resumed"}.`;
  if (answer.state) return `${answer.target} is ${answer.state}.`;
  return "Done.";
}

async function post(url, body) {
  busy++;
  try {
    const res = await fetch(url, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body});
    const answer = await res.json();
    flash(describe(answer), res.ok ? "ok" : "bad");
  } catch (err) {
    flash("The action did not reach the bridge: " + err.message, "bad");
  } finally {
    busy--;
  }
  refresh();
}

// A destructive or far-reaching action needs a second click on the same button.
function confirmed(button) {
  const question = button.dataset.confirm;
  if (!question || button.dataset.armed) {
    if (button.dataset.armed) { delete button.dataset.armed; busy--; }
    return true;
  }
  button.dataset.armed = "1";
  button.dataset.label = button.textContent;
  button.textContent = question + " — click again to confirm";
  busy++;
  setTimeout(() => {
    if (!button.dataset.armed) return;
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
    busy--;
  }, CONFIRM_MS);
  return false;
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-post], button[data-bulk-post]");
  if (!button) return;
  event.preventDefault();
  if (button.dataset.post) {
    if (confirmed(button)) post(button.dataset.post, button.dataset.body || "{}");
    return;
  }
  const form = button.closest("form");
  const items = [...form.querySelectorAll("input[name=item]:checked")].map(i => JSON.parse(i.value));
  if (!items.length) { flash("Select at least one listing first.", "bad"); return; }
  if (confirmed(button)) post(button.dataset.bulkPost, JSON.stringify({items}));
});

document.addEventListener("change", (event) => {
  if (!event.target.matches("[data-select-all]")) return;
  event.target.closest("form").querySelectorAll("input[name=item]")
    .forEach(i => { i.checked = event.target.checked; });
});

setInterval(refresh, REFRESH_MS);
