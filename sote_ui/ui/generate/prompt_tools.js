// Sote Studio prompt tools, in the page: Danbooru tag suggestions while typing, Ctrl+Enter to
// generate, Ctrl+Up / Ctrl+Down to change a tag's weight, and the tags of the prompt as sent, each a
// button for a with/without A/B in Compare. Loaded once through launch(head=...);
// it listens on the document, so it works on boxes Gradio renders later.
(() => {
  if (window.soteStudioPromptTools) return;
  window.soteStudioPromptTools = true;

  // Boxes that get suggestions, and the button Ctrl+Enter presses from them.
  const BOXES = {
    prompt: { run: "generate" },
    negative_prompt: { run: "generate" },
    artist: { run: "generate", category: "artist" },
    compare_prompt: { run: "compare" },
  };
  const COLORS = {
    general: "#3b82f6", artist: "#dc2626", copyright: "#a21caf", character: "#16a34a", meta: "#ea580c",
    wildcard: "#0d9488", lora: "#7c3aed",
  };
  const MIN_CHARS = 2;
  // A short pause for a burst of keys: the plain route answers in a few ms, so waiting longer only adds delay.
  const DELAY_MS = 15;

  function boxOf(target) {
    if (!target || !(target instanceof HTMLTextAreaElement || target instanceof HTMLInputElement)) return null;
    for (const id of Object.keys(BOXES)) {
      const root = document.getElementById(id);
      if (root && root.contains(target)) return { id, ...BOXES[id] };
    }
    return null;
  }

  // The plain suggestion route beside the app (prompt_tools.py): no queue, so it answers at once,
  // also while a run is going.
  function suggestUrl(typed, category) {
    const config = window.gradio_config;
    const root = (config && config.root) || window.location.href.split(/[?#]/)[0];
    const query = new URLSearchParams({ text: typed, category: category || "" });
    return root.replace(/\/$/, "") + "/sote_api/suggest_tags?" + query;
  }

  // Tell Gradio the box changed, as typing would.
  function changed(el) {
    el.dispatchEvent(new Event("input", { bubbles: true }));
  }

  // ---- 1. Suggestions -------------------------------------------------------------------------

  const popup = document.createElement("div");
  popup.id = "tag_suggestions";
  popup.setAttribute("role", "listbox");
  popup.style.cssText = "position:fixed;z-index:10000;display:none;min-width:280px;max-width:520px;" +
    "max-height:320px;overflow-y:auto;background:var(--background-fill-primary,#fff);color:var(--body-text-color,#111);" +
    "border:1px solid var(--border-color-primary,#ccc);border-radius:6px;box-shadow:0 6px 20px rgba(0,0,0,.18);" +
    "font-size:14px;padding:2px 0;";
  let state = { el: null, items: [], active: 0, start: 0, end: 0, seq: 0, timer: null };

  function attachPopup() {
    if (!popup.isConnected) document.body.appendChild(popup);
  }

  function close() {
    state.seq += 1; // a reply still on its way is for text that is gone
    clearTimeout(state.timer);
    popup.style.display = "none";
    popup.replaceChildren();
    state.items = [];
    state.el = null;
  }

  function formatCount(n) {
    if (!n) return "";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e3) return Math.round(n / 1e3) + "k";
    return String(n);
  }

  // What is being typed: from the last separator before the cursor to the cursor.
  function fragment(el, box) {
    const cursor = el.selectionStart;
    if (cursor !== el.selectionEnd) return null;
    const before = el.value.slice(0, cursor);
    if (box.category) return { text: before.trimStart(), start: before.length - before.trimStart().length };
    const cut = Math.max(before.lastIndexOf(","), before.lastIndexOf("\n"), before.lastIndexOf("|"),
      before.lastIndexOf("{"));
    let start = cut + 1;
    while (start < cursor && /[\s(\[]/.test(before[start])) start += 1;
    return { text: before.slice(start), start };
  }

  function render() {
    popup.replaceChildren();
    state.items.forEach((item, index) => {
      const row = document.createElement("div");
      row.className = "sote-suggestion";
      row.setAttribute("role", "option");
      row.setAttribute("aria-selected", index === state.active ? "true" : "false");
      row.style.cssText = "display:flex;gap:10px;align-items:baseline;padding:4px 10px;cursor:pointer;" +
        (index === state.active ? "background:var(--color-accent-soft,#e0e7ff);" : "");
      const name = document.createElement("span");
      name.className = "sote-suggestion-text";
      name.textContent = item.text.replace(/, $/, "");
      name.style.cssText = "flex:1;font-weight:500;color:" + (COLORS[item.category] || "#db2777");
      const alias = document.createElement("span");
      alias.textContent = item.alias ? "← " + item.alias : "";
      alias.style.cssText = "opacity:.6;font-size:12px";
      const kind = document.createElement("span");
      kind.className = "sote-suggestion-category";
      kind.textContent = item.category;
      kind.style.cssText = "font-size:11px;opacity:.75";
      const count = document.createElement("span");
      count.className = "sote-suggestion-count";
      count.textContent = item.category === "wildcard" ? item.count + " options"
        : item.category === "lora" ? "file" : item.count ? formatCount(item.count) : "model tag";
      count.style.cssText = "font-size:12px;opacity:.75;min-width:4.5em;text-align:right";
      row.append(name, alias, kind, count);
      row.addEventListener("mousedown", (event) => {
        event.preventDefault(); // keep the focus in the box
        state.active = index;
        insert();
      });
      popup.appendChild(row);
    });
    const rect = state.el.getBoundingClientRect();
    popup.style.left = rect.left + "px";
    popup.style.top = rect.bottom + 2 + "px";
    popup.style.display = state.items.length ? "block" : "none";
    const active = popup.children[state.active];
    if (active) active.scrollIntoView({ block: "nearest" });
  }

  async function lookup(el, box) {
    const part = fragment(el, box);
    const typed = part ? part.text.replace(/:[\d.]*$/, "") : "";
    if (!part || typed.trim().length < MIN_CHARS) {
      close();
      return;
    }
    const seq = ++state.seq;
    let items;
    try {
      const reply = await fetch(suggestUrl(typed, box.category), { credentials: "same-origin" });
      if (!reply.ok) return;
      items = await reply.json();
    } catch (error) {
      return; // suggestions are a convenience: typing goes on without them
    }
    const now = fragment(el, box);
    if (seq !== state.seq || document.activeElement !== el || !now || now.text !== part.text) return;
    attachPopup();
    state = { ...state, el, items, active: 0, start: part.start, end: el.selectionStart, box };
    if (!items.length) close();
    else render();
  }

  function insert() {
    const el = state.el;
    const item = state.items[state.active];
    if (!el || !item) return;
    // Replace all that is typed of the tag now: more may have been typed since the list came.
    const part = fragment(el, state.box);
    if (part) {
      state.start = part.start;
      state.end = el.selectionStart;
    }
    let text = item.text;
    const after = el.value.slice(state.end);
    if (/^\s*,/.test(after)) text = text.replace(/, $/, "");
    el.value = el.value.slice(0, state.start) + text + after;
    const cursor = state.start + text.length;
    el.setSelectionRange(cursor, cursor);
    close();
    changed(el);
  }

  document.addEventListener("input", (event) => {
    const box = boxOf(event.target);
    if (!box || !event.isTrusted) return;
    const el = event.target;
    clearTimeout(state.timer);
    state.timer = setTimeout(() => lookup(el, box), DELAY_MS);
  }, true);

  document.addEventListener("focusout", (event) => {
    if (state.el && event.target === state.el) setTimeout(close, 150);
  }, true);
  window.addEventListener("resize", close);

  // ---- 2. Weights: (tag:1.1) as A1111 writes them ------------------------------------------------

  // The span to weigh: the selection, or the tag around the cursor (between commas / line breaks).
  function tagSpan(value, start, end) {
    if (start !== end) {
      while (start < end && /\s/.test(value[start])) start += 1;
      while (end > start && /\s/.test(value[end - 1])) end -= 1;
      return [start, end];
    }
    let left = start;
    while (left > 0 && !/[,\n]/.test(value[left - 1])) left -= 1;
    let right = end;
    while (right < value.length && !/[,\n]/.test(value[right])) right += 1;
    while (left < right && /\s/.test(value[left])) left += 1;
    while (right > left && /\s/.test(value[right - 1])) right -= 1;
    return [left, right];
  }

  function adjustWeight(el, delta) {
    const value = el.value;
    let [start, end] = tagSpan(value, el.selectionStart, el.selectionEnd);
    if (start >= end) return;
    let inner = value.slice(start, end);
    let weight = 1.0;
    const whole = inner.match(/^\((.*):\s*([+-]?\d*\.?\d+)\)$/s);
    const around = value.slice(0, start).endsWith("(") && value.slice(end).match(/^:\s*([+-]?\d*\.?\d+)\)/);
    if (whole) {
      inner = whole[1];
      weight = parseFloat(whole[2]);
    } else if (around) {
      weight = parseFloat(around[1]);
      end += around[0].length;
      start -= 1;
    }
    weight = Math.round((weight + delta) * 100) / 100;
    const text = Math.abs(weight - 1) < 1e-9 ? inner : "(" + inner + ":" + weight.toFixed(1) + ")";
    el.value = value.slice(0, start) + text + value.slice(end);
    const innerStart = start + (text === inner ? 0 : 1);
    el.setSelectionRange(innerStart, innerStart + inner.length);
    changed(el);
  }

  // ---- 2b. A/B a tag: the prompt as sent, one button per tag -------------------------------------

  // The composed line under the prompt box reads "... sent: `tags`"; its tags (the prompt's and the
  // pickers') become buttons under it. A click asks Compare for A = as is, B = without that tag.
  function sentTags() {
    const line = document.getElementById("composed");
    if (!line) return null;
    for (const code of line.querySelectorAll("code")) {
      const before = code.previousSibling;
      if (before && /sent:\s*$/.test(before.textContent || "")) {
        return code.textContent.split(",").map((t) => t.trim()).filter(Boolean);
      }
    }
    return [];
  }

  let shownTags = "";
  function renderTagButtons() {
    const line = document.getElementById("composed");
    const found = sentTags();
    if (!line || found === null) return;
    let row = document.getElementById("ab_tags");
    if (!row || row.previousElementSibling !== line) {
      if (row) row.remove();
      row = document.createElement("div");
      row.id = "ab_tags";
      row.style.cssText = "display:flex;flex-wrap:wrap;gap:4px;align-items:center;font-size:12px;margin:2px 0 4px";
      line.insertAdjacentElement("afterend", row);
      shownTags = null;
    }
    const key = found.join("\n");
    if (key === shownTags) return;
    shownTags = key;
    row.replaceChildren();
    row.style.display = found.length ? "flex" : "none";
    const label = document.createElement("span");
    label.textContent = "A/B a tag:";
    label.title = "With and without the tag, at the same seed, in Compare";
    label.style.opacity = ".75";
    row.appendChild(label);
    for (const tag of found) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "sote-ab-tag";
      chip.textContent = tag;
      chip.title = "Compare with and without " + tag + " at the same seed";
      chip.style.cssText = "border:1px solid var(--border-color-primary,#ccc);border-radius:10px;padding:0 8px;" +
        "background:var(--background-fill-secondary,#f5f5f5);color:inherit;cursor:pointer;line-height:1.7";
      chip.addEventListener("click", () => abTag(tag));
      row.appendChild(chip);
    }
  }

  // The tag goes to a hidden box of the Compare tab, whose contents exist once the tab is shown.
  function abTag(tag) {
    const tab = [...document.querySelectorAll("button[role=tab]")].find((b) => b.textContent.trim() === "Compare");
    if (tab) tab.click();
    let tries = 0;
    const send = () => {
      const box = document.querySelector("#ab_tag_value textarea, #ab_tag_value input");
      const run = document.getElementById("ab_tag_run");
      if (!box || !run) {
        if (++tries < 50) setTimeout(send, 100);
        return;
      }
      box.value = tag;
      changed(box);
      setTimeout(() => run.click(), 30); // once Gradio has the box's new value
    };
    send();
  }

  setInterval(renderTagButtons, 400);

  // ---- 3. Keys -------------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    const box = boxOf(event.target);
    if (!box) return;
    const open = popup.style.display === "block" && state.el === event.target && state.items.length;
    const stop = () => {
      event.preventDefault();
      event.stopImmediatePropagation();
    };
    if (open && !event.ctrlKey && !event.metaKey && !event.altKey) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        stop();
        const step = event.key === "ArrowDown" ? 1 : -1;
        state.active = (state.active + step + state.items.length) % state.items.length;
        render();
        return;
      }
      if ((event.key === "Tab" && !event.shiftKey) || event.key === "Enter") {
        stop();
        insert();
        return;
      }
      if (event.key === "Escape") {
        stop();
        close();
        return;
      }
    }
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      stop();
      close();
      const button = document.getElementById(box.run);
      if (button) button.click();
      return;
    }
    if ((event.ctrlKey || event.metaKey) && (event.key === "ArrowUp" || event.key === "ArrowDown")
        && !box.category) {
      stop();
      close();
      adjustWeight(event.target, event.key === "ArrowUp" ? 0.1 : -0.1);
    }
  }, true);
})();
