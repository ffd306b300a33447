// The router: pages are addressed by query string (`/?job=ID`, `/?run=ID`,
// `/?view=flows`), so the fragment stays free for line permalinks (`#L120`). Links with
// `data-nav` are followed with the History API; Back and Forward re-render.

import { jobsPage, jobPage, runPage, flowsPage, webhooksPage } from "./pages.js";

const main = document.querySelector("main");
let cleanup = null;

async function render() {
  if (cleanup) {
    try { cleanup(); } catch (_) { /* page already gone */ }
    cleanup = null;
  }
  const params = new URLSearchParams(location.search);
  const view = params.get("view");
  document.title = "Logarithm";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === (params.has("job") ? "jobs" : params.has("run") ? "flows" : view || "jobs"));
  }
  let page;
  if (params.has("job")) page = jobPage;
  else if (params.has("run")) page = runPage;
  else if (view === "flows") page = flowsPage;
  else if (view === "webhooks") page = webhooksPage;
  else page = jobsPage;
  const c = await page(main, params);
  cleanup = typeof c === "function" ? c : null;
}

window.navigate = (url) => {
  history.pushState(null, "", url);
  window.scrollTo(0, 0);
  render();
};

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  window.navigate(a.getAttribute("href"));
});

window.addEventListener("popstate", () => render());
render();
