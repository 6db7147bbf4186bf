// The imgrag gallery: search by text, by an example image, or both; filters; a live status.
// No framework, no build step: plain DOM calls against the daemon's JSON API.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { image: null, similar: null, hits: [], indexed: null, seq: 0 };
  const LIMIT = 60;

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const kid of kids) if (kid != null) node.append(kid);
    return node;
  }

  function filters() {
    const f = {};
    const folder = $("f-folder").value.trim();
    if (folder) f.folder = folder;
    const tags = $("f-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) f.tags = tags;
    if ($("f-after").value) f.taken_after = $("f-after").value;
    if ($("f-before").value) f.taken_before = $("f-before").value;
    return Object.keys(f).length ? f : null;
  }

  async function search() {
    const text = $("q").value.trim();
    if (!text && !state.image && !state.similar) {
      state.hits = []; render(); $("message").textContent = "Type to search, or drop an image.";
      return;
    }
    const body = { limit: LIMIT };
    // The absolute path names one point even when two folders hold the same name.
    if (state.similar) body.similar_to = state.similar.abs_path.startsWith("/") ? state.similar.abs_path : state.similar.path;
    else { if (text) body.text = text; if (state.image) body.image = state.image; }
    const flt = filters();
    if (flt) body.filter = flt;
    const source = $("f-source").value;
    if (source) body.source = source;
    const min = parseFloat($("f-min").value);
    if (!Number.isNaN(min)) body.min_score = min;
    const seq = ++state.seq;
    $("message").textContent = "Searching…";
    let res, data;
    try {
      res = await fetch("/search", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      data = await res.json();
    } catch (err) {
      if (seq === state.seq) $("message").textContent = "The daemon did not answer: " + err;
      return;
    }
    if (seq !== state.seq) return; // a newer search is under way
    if (!res.ok) { state.hits = []; render(); $("message").textContent = data.error || res.statusText; return; }
    state.hits = $("f-strong").checked ? data.filter((h) => !h.weak) : data;
    render();
    const strong = state.hits.filter((h) => !h.weak).length;
    const what = state.similar ? `images like ${state.similar.path}` : text ? `"${text}"` : "the image";
    $("message").textContent = !state.hits.length
      ? `Nothing found for ${what}` + (flt || source ? " with these filters." : ".")
      : strong === 0 ? `Nothing relevant found for ${what}: only weak matches.`
      : `${state.hits.length} results for ${what}` + (strong < state.hits.length ? ` (${state.hits.length - strong} weak)` : "");
  }

  function render() {
    const grid = $("results");
    grid.replaceChildren();
    state.hits.forEach((hit, i) => {
      const p = hit.payload || {};
      const meta = el("div", { class: "meta" },
        el("div", {}, el("span", { class: "score" }, hit.score.toFixed(3)),
          hit.weak ? el("span", { class: "weak-mark", title: "below this model's relevance floor" }, "weak match") : null),
        el("div", { class: "path" }, hit.path));
      if (p.caption) meta.append(el("div", { class: "caption" }, p.caption));
      if (p.tags && p.tags.length) meta.append(el("div", {}, ...p.tags.map((t) => el("span", { class: "tag" }, t))));
      const card = el("a", { class: "hit" + (hit.weak ? " weak" : ""), tabindex: "0", role: "listitem", "data-i": String(i), "data-id": hit.id },
        el("img", { src: "/thumb/" + hit.id, loading: "lazy", alt: hit.path, width: "256", height: "256" }), meta);
      card.addEventListener("click", () => open(i));
      grid.append(card);
    });
  }

  function open(i) {
    const hit = state.hits[i];
    if (!hit) return;
    const p = hit.payload || {};
    $("detail-img").src = "/image/" + hit.id;
    $("detail-img").alt = hit.path;
    const rows = [["path", hit.abs_path], ["score", hit.score.toFixed(4) + (hit.weak ? " (weak)" : "")],
      ["caption", p.caption], ["tags", (p.tags || []).join(", ")], ["taken", p.taken_at], ["camera", p.camera],
      ["size", p.width && p.height ? `${p.width}×${p.height}, ${p.size} bytes` : null], ["format", p.format],
      ["indexed", p.ingested_at], ["model", p.model]];
    $("detail-meta").replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
    $("detail").dataset.i = String(i);
    if (!$("detail").open) $("detail").showModal();
  }

  function moreLike() {
    const hit = state.hits[Number($("detail").dataset.i)];
    if (!hit) return;
    $("detail").close();
    state.similar = hit; state.image = null; $("example").hidden = true;
    $("q").value = "";
    search();
  }

  function useImage(file) {
    if (!file || !file.type.startsWith("image/")) return;
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      state.image = url.slice(url.indexOf(",") + 1);
      state.similar = null;
      $("example-img").src = url;
      $("example").hidden = false;
      search();
    };
    reader.readAsDataURL(file);
  }

  // "pending 12", or its age when it comes from a background walk (never silently stale).
  function pendingWords(x) {
    if (x.pending_live !== false) return `pending ${x.pending}`;
    if (x.pending_as_of == null) return "pending not counted yet";
    return `pending ${x.pending} as of ${Math.max(0, Math.round(Date.now() / 1000 - x.pending_as_of))} s ago`;
  }

  // Each poll sends the tag of the report it has: an unchanged one is a bodiless 304.
  async function pollStatus() {
    try {
      const headers = state.statusTag ? { "If-None-Match": state.statusTag } : {};
      const res = await fetch("/status", { credentials: "same-origin", cache: "no-store", headers });
      if (res.status === 304) { setTimeout(pollStatus, 1500); return; }
      const s = await res.json();
      if (!res.ok) throw new Error(s.error || res.statusText);
      state.statusTag = res.headers.get("ETag");
      const body = [el("div", {}, `indexed ${s.indexed} · ${pendingWords(s)} · failed ${s.failed}`)];
      if (s.health && s.health !== "ok") body.push(el("div", { class: "bad" }, "health: " + s.health));
      if (s.waiting_for) body.push(el("div", { class: "bad" }, "waiting for " + s.waiting_for));
      for (const p of s.problems || []) body.push(el("div", { class: "bad" }, p));
      const reasons = Object.entries(s.failed_by_reason || {});
      if (reasons.length) body.push(el("ul", {}, ...reasons.map(([r, n]) => el("li", {}, `${r}: ${n}`))));
      if ((s.failures || []).length) {
        body.push(el("ul", { class: "failures" }, ...s.failures.map((f) => el("li", { title: f.message }, `${f.path} — ${f.reason}`))));
      }
      const sources = s.sources || [];
      if (sources.length > 1 || sources.some((x) => !x.reachable)) {
        body.push(el("ul", { class: "sources" }, ...sources.map((x) => el("li", { class: x.reachable ? "" : "bad", title: x.root },
          `${x.name}: ${x.indexed} indexed, ${pendingWords(x)}, ${x.failed} failed` + (x.reachable ? "" : " (not reachable)")))));
      }
      showSources(sources);
      if (s.embedder && s.embedder.model) body.push(el("div", {}, "model " + s.embedder.model));
      $("status-body").replaceChildren(...body);
      $("status").dataset.indexed = String(s.indexed);
      // New files indexed: the results may change, so ask again (no reload needed).
      if (state.indexed !== null && s.indexed !== state.indexed) search();
      state.indexed = s.indexed;
    } catch (err) {
      $("status-body").replaceChildren(el("div", { class: "bad" }, "status unavailable: " + err.message));
    }
    setTimeout(pollStatus, 1500);
  }

  // The source filter lists the index's sources; a choice stays while its source does.
  function showSources(sources) {
    const select = $("f-source");
    const names = sources.map((x) => x.name);
    const have = [...select.options].slice(1).map((o) => o.value);
    if (names.join("\n") === have.join("\n")) return;
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"),
      ...sources.map((x) => el("option", { value: x.name, title: x.root }, x.name)));
    select.value = names.includes(chosen) ? chosen : "";
    if (chosen && select.value !== chosen) search();
  }

  function move(delta) {
    const cards = [...document.querySelectorAll(".hit")];
    if (!cards.length) return;
    const at = cards.indexOf(document.activeElement);
    if (at < 0) { cards[0].focus(); return; }
    let step = delta;
    if (Math.abs(delta) > 1) { // up/down: one row, however many columns fit
      const top = cards[0].offsetTop;
      const perRow = Math.max(1, cards.filter((c) => c.offsetTop === top).length);
      step = Math.sign(delta) * perRow;
    }
    const next = cards[Math.min(cards.length - 1, Math.max(0, at + step))];
    next.focus();
    next.scrollIntoView({ block: "nearest" });
  }

  let timer = 0;
  const later = () => { clearTimeout(timer); timer = setTimeout(search, 250); };
  $("q").addEventListener("input", () => { state.similar = null; later(); });
  $("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("filters").addEventListener("input", later);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("file").addEventListener("change", (e) => useImage(e.target.files[0]));
  $("example-clear").addEventListener("click", () => { state.image = null; $("example").hidden = true; search(); });
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail-more").addEventListener("click", moreLike);
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); useImage(file); }
  });
  document.addEventListener("dragover", (e) => { e.preventDefault(); $("drop-hint").hidden = false; });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) $("drop-hint").hidden = true; });
  document.addEventListener("drop", (e) => {
    e.preventDefault(); $("drop-hint").hidden = true;
    useImage([...e.dataTransfer.files].find((f) => f.type.startsWith("image/")));
  });
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("q").focus(); $("q").select(); return; }
    if ($("detail").open) {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        e.preventDefault(); open(Number($("detail").dataset.i) + (e.key === "ArrowRight" ? 1 : -1));
      }
      return;
    }
    if (typing && e.key !== "ArrowDown") return;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: 2, ArrowUp: -2 };
    if (e.key in moves) { e.preventDefault(); move(moves[e.key]); }
    else if (e.key === "Enter" && document.activeElement.classList.contains("hit")) {
      e.preventDefault(); open(Number(document.activeElement.dataset.i));
    }
  });
  pollStatus();
  $("q").focus();
})();
