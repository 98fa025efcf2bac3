// The steering chat: feature rows, two histories, and SSE streaming from /api/v1/steer/stream.
// Every piece of text reaches the page through textContent, never as markup.
(() => {
  const state = JSON.parse(document.getElementById("steer-state").textContent);
  const limits = JSON.parse(document.getElementById("steer-limits").textContent);
  const $ = (id) => document.getElementById(id);
  const settings = {
    mode: $("gen-mode"), temperature: $("gen-temperature"), top_p: $("gen-top-p"),
    frequency_penalty: $("gen-frequency-penalty"), presence_penalty: $("gen-presence-penalty"),
    max_new_tokens: $("gen-max-tokens"), seed: $("gen-seed"), multiplier: $("gen-multiplier"),
  };
  for (const [key, input] of Object.entries(settings)) if (state.settings[key] !== undefined) input.value = state.settings[key];
  // Conditions are written as the presets write them: SAE/INDEX>LEVEL, LEVEL in raw activation units.
  const CONDITION = /^\s*([^/:\s>]+)\/(\d+)\s*>\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)\s*$/i;
  const conditionText = (c) => (c ? `${c.sae}/${c.index}>${c.above}` : "");
  function parseCondition(text) {
    const found = CONDITION.exec(text);
    return found ? { sae: found[1], index: Number(found[2]), above: Number(found[3]) } : null;
  }
  $("gen-stop-when").value = (state.settings.stop_when || []).map(conditionText).join(", ");
  // What else a link or a shared session presets: the sweep, the extra readings, the message.
  if (state.settings.sweep) $("sweep-multipliers").value = state.settings.sweep.join(", ");
  $("gen-frozen").checked = Boolean(state.settings.frozen);
  $("gen-logprobs").checked = Boolean(state.settings.logprobs);
  if (state.message) $("steer-message").value = state.message;
  // null when the box holds something that is not a list of conditions (the caller says so)
  function stopConditions() {
    const parts = $("gen-stop-when").value.split(",").map((t) => t.trim()).filter(Boolean);
    const parsed = parts.map(parseCondition);
    return parsed.includes(null) ? null : parsed;
  }
  let controller = null;

  // The slider is in multiples of max activation whatever the units, and finer near zero:
  // multiple = sign · max · (position / 100)².
  const round2 = (x) => Math.round(x * 100) / 100;
  const toMultiple = (p) => Math.sign(p) * limits.max_strength * (Math.abs(p) / 100) ** 2;
  const toSlider = (m) => Math.round(Math.sign(m) * 100 * Math.sqrt(Math.min(1, Math.abs(m) / limits.max_strength)));
  const perMultiple = (f) => (f.units === "raw" ? f.max_act : 1); // strength units per × max
  const limitOf = (f) => (f.units === "raw" ? limits.max_raw_strength : limits.max_strength);
  const wire = ({ sae, index, mode, strength, units, positions, when }) => ({ sae, index, mode, strength, units: units || "max_act", positions: positions || "all", when: when || null });
  const options = (values) => values.map(([value, text]) => el("option", { value, textContent: text }));

  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  function renderFeatures() {
    const body = document.querySelector("#steer-features tbody");
    body.replaceChildren();
    $("no-features").hidden = state.features.length > 0;
    state.features.forEach((f, i) => {
      f.units = f.units || "max_act"; f.positions = f.positions || "all";
      const mode = el("select", { className: "mode" }, ...options([["clamp", "clamp"], ["add", "add"], ["cap", "cap"]]));
      mode.value = f.mode;
      mode.setAttribute("aria-label", `mode of feature ${f.index}`);
      mode.onchange = () => { f.mode = mode.value; };
      // The slider for reaching a strength, the number box for setting one exactly; each follows the other.
      const exact = el("input", { type: "number", step: 0.01, value: f.strength.toFixed(2), className: "strength" });
      exact.setAttribute("aria-label", `exact strength of feature ${f.index}`);
      const slider = el("input", { type: "range", min: -100, max: 100, step: 1, className: "strength-slider" });
      slider.setAttribute("aria-label", `strength of feature ${f.index}`);
      const show = () => {
        exact.min = -limitOf(f); exact.max = limitOf(f);
        exact.value = f.strength.toFixed(2);
        slider.value = toSlider(f.strength / perMultiple(f));
      };
      slider.oninput = () => { f.strength = round2(toMultiple(Number(slider.value)) * perMultiple(f)); exact.value = f.strength.toFixed(2); };
      exact.onchange = () => {
        const typed = Number(exact.value);
        f.strength = Number.isFinite(typed) ? round2(Math.max(-limitOf(f), Math.min(limitOf(f), typed))) : f.strength;
        show();
      };
      // Raw units are the SAE's own activation scale; switching converts through max activation.
      const units = el("select", { className: "units", disabled: !f.max_act }, ...options([["max_act", "× max"], ["raw", "raw"]]));
      units.value = f.units;
      units.setAttribute("aria-label", `units of feature ${f.index}`);
      units.onchange = () => {
        const multiple = f.strength / perMultiple(f);
        f.units = units.value;
        f.strength = round2(Math.max(-limitOf(f), Math.min(limitOf(f), multiple * perMultiple(f))));
        show();
      };
      const positions = el("select", { className: "positions" }, ...options([["all", "all"], ["prompt", "prompt"], ["generated", "generated"]]));
      positions.value = f.positions;
      positions.setAttribute("aria-label", `positions of feature ${f.index}`);
      positions.onchange = () => { f.positions = positions.value; };
      show();
      // Conditional steering: only at tokens where another feature exceeds a level.
      const when = el("input", { type: "text", className: "when", size: 12, value: conditionText(f.when), placeholder: "always" });
      when.setAttribute("aria-label", `condition of feature ${f.index}`);
      when.title = "Steer only at tokens where this feature's activation exceeds the level, e.g. res1/12>0.5 (raw units; read at or before this feature's site)";
      when.onchange = () => {
        const text = when.value.trim();
        const parsed = text ? parseCondition(text) : null;
        when.classList.toggle("invalid", Boolean(text) && !parsed);
        if (text && !parsed) { status(`Write a condition as SAE/INDEX>LEVEL, e.g. ${f.sae}/12>0.5.`); return; }
        f.when = parsed;
        status("");
      };
      const remove = el("button", { type: "button", className: "remove", textContent: "remove" });
      remove.onclick = () => { state.features.splice(i, 1); renderFeatures(); };
      const link = el("a", { href: `/${encodeURIComponent(modelName())}/${encodeURIComponent(f.sae)}/${f.index}`, textContent: `#${f.index}` });
      body.append(el("tr", {}, el("td", {}, link, " ", el("span", { textContent: f.label || "no label" }), " ", el("span", { className: "muted", textContent: f.sae })),
        el("td", {}, mode), el("td", { className: "strength-cell" }, slider, exact, units), el("td", {}, positions), el("td", {}, when), el("td", {}, remove)));
    });
  }

  const modelName = () => document.querySelector("h1").dataset.model;

  document.addEventListener("click", (event) => {
    const pick = event.target.closest("button.pick");
    if (!pick) return;
    if (state.features.length >= limits.max_features) { status(`At most ${limits.max_features} features.`); return; }
    const index = Number(pick.dataset.index);
    if (!state.features.some((f) => f.sae === pick.dataset.sae && f.index === index)) {
      state.features.push({ sae: pick.dataset.sae, index, mode: "clamp", strength: 5, units: "max_act", positions: "all", label: pick.dataset.label, max_act: Number(pick.dataset.maxAct) || null });
    }
    renderFeatures();
  });

  function status(text) { $("steer-status").textContent = text; }

  function bubble(side, role, text) {
    const node = el("div", { className: `message ${role}` }, el("span", { className: "role", textContent: role === "user" ? "You" : "Model" }), el("div", { className: "content", textContent: text }));
    $(`${side}-messages`).append(node);
    return node.querySelector(".content");
  }

  function renderTranscripts() {
    for (const side of ["default", "steered"]) {
      $(`${side}-messages`).replaceChildren();
      for (const m of state[side]) bubble(side, m.role, m.content);
    }
  }

  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
        }
        if (data) yield { name, data: JSON.parse(data) };
      }
    }
  }

  // The server's message: a string, or FastAPI's list of invalid fields ("frequency_penalty: …").
  function problem(result, code) {
    if (typeof result.detail === "string") return result.detail;
    if (Array.isArray(result.detail)) return result.detail.map((e) => `${e.loc.slice(1).join(".") || "input"}: ${e.msg}`).join("; ");
    return `request failed (${code})`;
  }

  function requestBody(mode, message, history) {
    return {
      features: state.features.map(wire),
      mode, max_new_tokens: Number(settings.max_new_tokens.value), temperature: Number(settings.temperature.value),
      top_p: Number(settings.top_p.value), frequency_penalty: Number(settings.frequency_penalty.value),
      presence_penalty: Number(settings.presence_penalty.value), seed: Number(settings.seed.value),
      multiplier: Number(settings.multiplier.value), stop_when: stopConditions() || [],
      ...(mode === "chat" ? { messages: history.steered, default_messages: history.default } : { prompt: message }),
    };
  }

  const sweepMultipliers = () => $("sweep-multipliers").value.split(/[\s,]+/).filter(Boolean).map(Number);

  // A sweep: the typed message at several multiples of every feature's strength, one seed, each
  // reply with its loss under the unsteered model; a loss past 1.5x the default reply's marks
  // where steering stops reading as language. The chat's history is used, never extended.
  async function sweep(message) {
    const mode = settings.mode.value;
    const user = { role: "user", content: message };
    const history = { default: [...state.default, user], steered: [...state.steered, user] };
    const body = { ...requestBody(mode, message, history), multipliers: sweepMultipliers() };
    controller = new AbortController();
    status("sweeping…");
    try {
      const response = await fetch("/api/v1/steer/sweep", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: controller.signal });
      const result = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(problem(result, response.status));
      renderSweep(result);
      status("");
    } catch (error) {
      status(error.name === "AbortError" ? "stopped" : error.message);
    } finally {
      controller = null;
    }
  }

  function renderSweep(result) {
    const head = el("tr", {}, el("th", { textContent: "× strength" }),
      ...result.features.map((f) => el("th", { textContent: `${f} peak` })),
      el("th", { textContent: "loss" }), el("th", { textContent: "÷ default" }), el("th", { textContent: "reply" }));
    const base = result.default.loss;
    const rows = [result.default, ...result.steered].map((r) => {
      const ratio = base > 0 ? r.loss / base : 1;
      const row = el("tr", { className: r.multiplier !== null && ratio > 1.5 ? "cliff" : "" },
        el("td", { textContent: r.multiplier === null ? "default" : `${r.multiplier}×` }),
        ...r.activations.map((a) => el("td", { className: "num", textContent: a.toFixed(2) })),
        el("td", { className: "num", textContent: r.loss.toFixed(3) }),
        el("td", { className: "num", textContent: ratio.toFixed(2) }),
        el("td", { className: "reply", textContent: r.text }));
      if (row.className) row.title = "loss over 1.5× the default reply's: past the coherence cliff";
      return row;
    });
    $("sweep-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    $("sweep").hidden = false;
  }

  // Logprobs: each reply token becomes a span whose title gives its probability on both sides
  // and the writing side's alternatives; on the steered side, tokens the steering made at least
  // twice as likely are marked, and the first token where the replies part is outlined.
  async function showLogprobs(body, outputs) {
    status("reading token probabilities…");
    const response = await fetch("/api/v1/steer/logprobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const result = await response.json().catch(() => ({}));
    if (!response.ok) { status(problem(result, response.status)); return; }
    const pct = (lp) => `${(100 * Math.exp(lp)).toFixed(1)}%`;
    for (const side of ["default", "steered"]) {
      const other = side === "default" ? "steered" : "default";
      outputs[side].replaceChildren(...result[side].map((t, i) => {
        const alternatives = t.top.map(([token, lp]) => `${JSON.stringify(token)} ${pct(lp)}`).join("\n");
        const span = el("span", { className: "tok", textContent: t.token, title: `${pct(t.logprob)} here · ${pct(t.other_logprob)} ${other}\n${alternatives}` });
        if (side === "steered" && t.logprob - t.other_logprob > Math.LN2) span.classList.add("pushed");
        if (i === result.diverge_at) span.classList.add("diverge");
        return span;
      }));
    }
    status("");
  }

  // The steered reply again with attention frozen to the unsteered model's patterns, under the
  // ordinary one: shown, never added to the history the next turn is generated from.
  async function showFrozen(body) {
    status("generating with attention frozen…");
    const response = await fetch("/api/v1/steer/frozen", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const result = await response.json().catch(() => ({}));
    if (!response.ok) { status(problem(result, response.status)); return; }
    const node = el("div", { className: "message assistant frozen", title: "Same features, seed and settings, with every attention pattern frozen to the unsteered model's over the same tokens" },
      el("span", { className: "role", textContent: "Model, attention frozen" }), el("div", { className: "content", textContent: result.text }));
    $("steered-messages").append(node);
    status("");
  }

  async function send(message) {
    const mode = settings.mode.value;
    const user = { role: "user", content: message };
    const history = mode === "chat" ? { default: [...state.default, user], steered: [...state.steered, user] } : null;
    const outputs = {};
    for (const side of ["default", "steered"]) {
      bubble(side, "user", message);
      outputs[side] = bubble(side, "assistant", "");
      outputs[side].classList.add("streaming");
    }
    const body = requestBody(mode, message, history);
    controller = new AbortController();
    $("steer-stop").hidden = false;
    status("generating…");
    try {
      const response = await fetch("/api/v1/steer/stream", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: controller.signal });
      if (!response.ok) {
        throw new Error(problem(await response.json().catch(() => ({})), response.status));
      }
      for await (const event of events(response)) {
        if (event.name === "token") outputs[event.data.side].textContent += event.data.text;
        else if (event.name === "error") throw new Error(event.data.detail);
        else if (event.name === "done") {
          const stopped = ["default", "steered"].filter((side) => event.data[side] === "feature");
          status(stopped.length ? `${stopped.join(" and ")} reply ended by a stop condition` : "");
        }
      }
      for (const side of ["default", "steered"]) {
        state[side].push(user, { role: "assistant", content: outputs[side].textContent });
      }
      if ($("gen-frozen").checked && state.features.length) await showFrozen(body);
      if ($("gen-logprobs").checked) await showLogprobs({ ...body, default_reply: outputs.default.textContent, steered_reply: outputs.steered.textContent }, outputs);
    } catch (error) {
      status(error.name === "AbortError" ? "stopped" : error.message);
      for (const side of ["default", "steered"]) {
        const messages = $(`${side}-messages`);
        messages.lastChild.remove(); messages.lastChild.remove(); // the failed turn leaves no trace
      }
    } finally {
      for (const side of ["default", "steered"]) outputs[side].classList.remove("streaming");
      $("steer-stop").hidden = true;
      controller = null;
    }
  }

  const stopsInvalid = () => {
    const bad = stopConditions() === null;
    $("gen-stop-when").classList.toggle("invalid", bad);
    if (bad) status("Write stop conditions as SAE/INDEX>LEVEL, separated by commas.");
    return bad;
  };
  $("steer-send").addEventListener("submit", (event) => {
    event.preventDefault();
    const message = $("steer-message").value.trim();
    if (!message || controller || stopsInvalid()) return;
    $("steer-message").value = "";
    send(message);
  });
  $("steer-message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("steer-send").requestSubmit(); }
  });
  $("steer-sweep").onclick = () => {
    const message = $("steer-message").value.trim();
    if (controller) return;
    if (!message) { status("Type a message to sweep."); return; }
    if (!state.features.length) { status("Add a feature to sweep its strength."); return; }
    if (stopsInvalid()) return;
    sweep(message);
  };
  $("steer-stop").onclick = () => controller && controller.abort();
  $("steer-reset").onclick = () => { state.default = []; state.steered = []; renderTranscripts(); status(""); };
  $("steer-share").onclick = async () => {
    const body = { features: state.features.map(wire),
      settings: { ...Object.fromEntries(Object.entries(settings).map(([k, input]) => [k, k === "mode" ? input.value : Number(input.value)])),
        stop_when: stopConditions() || [], sweep: sweepMultipliers(), frozen: $("gen-frozen").checked, logprobs: $("gen-logprobs").checked },
      default: state.default, steered: state.steered };
    const csrf = document.querySelector("meta[name=csrf-token]");
    const headers = { "Content-Type": "application/json", ...(csrf ? { "X-CSRF-Token": csrf.content } : {}) };
    const response = await fetch("/steer/share", { method: "POST", headers, body: JSON.stringify(body) });
    const result = await response.json();
    if (!response.ok) { status(problem(result, response.status)); return; }
    const link = $("share-link");
    link.value = result.url; link.hidden = false; link.select();
    status("share link ready");
  };

  // AutoSteer: a described change, tried on the typed message; the best fluent trial opens as a
  // preset (a link, so it can be shared), every trial is tabled.
  $("auto-steer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const description = $("auto-description").value.trim();
    const message = $("steer-message").value.trim();
    if (!description || !message) { status("Type a description, and a message to try it on."); return; }
    status("searching features and strengths…");
    const response = await fetch("/api/v1/steer/auto", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ description, message }) });
    const result = await response.json().catch(() => ({}));
    if (!response.ok) { status(problem(result, response.status)); return; }
    $("auto-best").replaceChildren(result.preset
      ? el("a", { href: result.preset, id: "auto-preset", textContent: "Open the best as a preset" })
      : el("span", { className: "muted", textContent: "No fluent trial moved the replies towards the description." }));
    const head = el("tr", {}, ...["feature", "found by", "× max", "relevance gained", "loss ÷ default", "fluent", "a reply"].map((t) => el("th", { textContent: t })));
    const rows = result.trials.map((t) => el("tr", { className: t.fluent ? "" : "cliff" },
      el("td", {}, el("a", { href: `/${encodeURIComponent(modelName())}/${encodeURIComponent(t.sae)}/${t.index}`, textContent: `${t.sae}/${t.index}` }), " ", el("span", { textContent: t.label || "" })),
      el("td", { textContent: t.found_by }), el("td", { className: "num", textContent: `${t.multiple}` }),
      el("td", { className: "num", textContent: t.relevance_gain.toFixed(3) }), el("td", { className: "num", textContent: t.loss_ratio.toFixed(2) }),
      el("td", { textContent: t.fluent ? "yes" : "no" }), el("td", { className: "reply", textContent: t.replies[0] || "" })));
    $("auto-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    $("auto").hidden = false;
    status("");
  });

  renderFeatures();
  renderTranscripts();
})();
