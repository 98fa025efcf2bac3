// An SAE's feature map on a canvas: d3-zoom pans and zooms, a d3 quadtree finds the feature under
// the pointer, search hits are lit up from the server's ranking. Labels reach the page through
// textContent only. Points are drawn one fill per colour bin, so 100k features cost 32 fills.
(() => {
  const canvas = document.getElementById("feature-map");
  if (!canvas || !window.d3) return;
  const form = document.querySelector(".map-controls");
  const tip = document.querySelector(".map-tip");
  const legend = document.querySelector(".map-legend");
  const status = form.querySelector(".map-status");
  const context = canvas.getContext("2d");
  const BINS = 32;
  const PAD = 16;
  const GREY = "#c8c8c8";
  const BEST = 20; // matches drawn bold: a page of site search
  const featureUrl = (index) => canvas.dataset.feature.replace(canvas.dataset.placeholder, String(index));
  const focus = canvas.dataset.focus === undefined ? null : Number(canvas.dataset.focus);

  const colourings = {
    density: {
      // log10 firing rate: 1e-6 … 0.3 covers every alive feature the demo has
      // the palettes stop short of their palest ends, which vanish on the white canvas
      value: (p, i) => Math.log10(p.density[i]), domain: [-6, -0.5],
      scale: (t) => d3.interpolateViridis(0.9 * t),
      caption: ["density 10⁻⁶", "0.3"],
    },
    score: {
      value: (p, i) => p.score[i], domain: [-0.2, 1],
      scale: (t) => d3.interpolateInferno(0.1 + 0.75 * t),
      caption: ["score −0.2", "1"],
    },
    labelled: {
      value: (p, i) => (p.label[i] ? 1 : null), domain: [0, 1], scale: () => "#2f6fd0",
      caption: ["unlabelled (grey)", "labelled"],
    },
  };

  let points = null;
  let quadtree = null;
  let transform = d3.zoomIdentity;
  let hits = new Map(); // position in the columns → rank among the matches (0 = best)
  let hover = null;
  let bins = [];
  let palette = 0; // bumped whenever the bins are recoloured
  let layerKey = "";
  let frame = 0;

  const base = () => {
    const side = Math.min(canvas.clientWidth, canvas.clientHeight) - 2 * PAD;
    return {
      side,
      left: (canvas.clientWidth - side) / 2,
      top: (canvas.clientHeight - side) / 2,
    };
  };
  const toScreen = (i) => {
    const b = base();
    return transform.apply([b.left + points.x[i] * b.side, b.top + points.y[i] * b.side]);
  };

  function binPoints() {
    const c = colourings[form.elements.colour.value] || colourings.density;
    const [low, high] = c.domain;
    bins = Array.from({ length: BINS + 1 }, () => []); // the last bin: no value (grey)
    for (let i = 0; i < points.index.length; i++) {
      const v = c.value(points, i);
      if (v === null || v === undefined || !Number.isFinite(v)) { bins[BINS].push(i); continue; }
      const t = Math.min(1, Math.max(0, (v - low) / (high - low)));
      bins[Math.min(BINS - 1, Math.floor(t * BINS))].push(i);
    }
    bins = bins.map((members) => Int32Array.from(members));
    bins.colours = [...Array.from({ length: BINS }, (_, b) => c.scale((b + 0.5) / BINS)), GREY];
    palette += 1;
    legend.replaceChildren();
    const bar = document.createElement("span");
    bar.className = "map-legend-bar";
    bar.style.background = `linear-gradient(to right, ${bins.colours.slice(0, BINS).join(",")})`;
    const [from, to] = c.caption.map((text) => Object.assign(document.createElement("span"), { textContent: text }));
    legend.append(from, bar, to);
  }

  // Points are written straight into a pixel buffer, a square each (later bins on top), which
  // is kept while only the hover or the rings change. At 100k features in headless Chromium a
  // zoom step cost 108 ms p50 painted as canvas rects and 36 ms this way; a pointer move 10 ms
  // (bench/map.py).
  let pixels = null;
  function paintPoints(side, ratio) {
    const width = canvas.width;
    const height = canvas.height;
    if (!pixels || pixels.width !== width || pixels.height !== height) {
      pixels = context.createImageData(width, height);
    }
    const words = new Uint32Array(pixels.data.buffer);
    words.fill(0);
    const b = base();
    const k = transform.k;
    const square = Math.max(1, Math.round(side));
    const half = square >> 1;
    const dimmed = hits.size > 0;
    bins.forEach((members, bin) => {
      const word = packedColour(bins.colours[bin], dimmed);
      for (const i of members) {
        const x = Math.round((transform.x + (b.left + points.x[i] * b.side) * k) * ratio) - half;
        const y = Math.round((transform.y + (b.top + points.y[i] * b.side) * k) * ratio) - half;
        if (x < 0 || y < 0 || x + square > width || y + square > height) continue;
        for (let row = y * width + x, end = row + square * width; row < end; row += width) {
          words.fill(word, row, row + square);
        }
      }
    });
  }

  // An opaque colour as one little-endian RGBA word; dimmed ones are mixed three parts white.
  function packedColour(css, dimmed) {
    const { r, g, b } = d3.rgb(css);
    const mix = (v) => Math.round(dimmed ? v + (255 - v) * 0.75 : v);
    return ((255 << 24) | (mix(b) << 16) | (mix(g) << 8) | mix(r)) >>> 0;
  }

  function draw() {
    frame = 0;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const size = Math.min(7, 2.5 + Math.log2(transform.k));
    const key = [transform.x, transform.y, transform.k, canvas.width, canvas.height, palette, hits.size > 0].join();
    if (key !== layerKey) { paintPoints(size * ratio, ratio); layerKey = key; }
    context.putImageData(pixels, 0, 0);
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    const ring = (i, colour, radius) => {
      const [x, y] = toScreen(i);
      context.strokeStyle = colour;
      context.lineWidth = 2;
      context.beginPath();
      context.arc(x, y, radius, 0, 2 * Math.PI);
      context.stroke();
    };
    // The best matches stand out; the rest of a broad query's matches are drawn fainter.
    for (const [i, rank] of hits) {
      context.globalAlpha = rank < BEST ? 1 : 0.35;
      ring(i, "#d62728", size + 3);
    }
    context.globalAlpha = 1;
    if (focus !== null && positionOf.has(focus)) ring(positionOf.get(focus), "#111", size + 6);
    if (hover !== null) ring(hover, "#111", size + 2);
  }
  const redraw = () => { if (!frame) frame = requestAnimationFrame(draw); };

  let positionOf = new Map();
  function featureAt(event) {
    const [sx, sy] = d3.pointer(event, canvas);
    const [px, py] = transform.invert([sx, sy]);
    const b = base();
    const radius = 8 / (transform.k * b.side);
    return quadtree.find((px - b.left) / b.side, (py - b.top) / b.side, radius) ?? null;
  }

  function showTip(i, event) {
    const lines = [
      `#${points.index[i]}${hits.has(i) ? " · matches" : ""}`,
      points.label[i] || "(no label)",
      `density ${(points.density[i] * 100).toPrecision(2)}%` +
        (points.score[i] === null ? "" : ` · score ${points.score[i].toFixed(2)}`),
    ];
    tip.replaceChildren(...lines.map((text, n) => {
      const line = document.createElement(n === 1 ? "strong" : "span");
      line.textContent = text;
      return line;
    }));
    const [sx, sy] = d3.pointer(event, canvas.parentElement);
    tip.style.left = `${sx + 14}px`;
    tip.style.top = `${sy + 10}px`;
    tip.hidden = false;
  }

  function rememberState() {
    const url = new URL(location.href);
    const q = form.elements.q.value.trim();
    url.searchParams.set("colour", form.elements.colour.value);
    if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
    history.replaceState(null, "", url);
  }

  let searching = null;
  async function lightUp() {
    const q = form.elements.q.value.trim();
    if (searching) searching.abort();
    if (!q) {
      hits = new Map();
      status.textContent = `${points.index.length.toLocaleString()} features`;
      redraw();
      return;
    }
    searching = new AbortController();
    const url = new URL(canvas.dataset.hits, location.href);
    url.searchParams.set("q", q);
    try {
      const response = await fetch(url, { signal: searching.signal, headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : "search failed");
      const placed = body.index.filter((index) => positionOf.has(index));
      hits = new Map(placed.map((index, rank) => [positionOf.get(index), rank]));
      status.textContent = `${hits.size.toLocaleString()} matching feature${hits.size === 1 ? "" : "s"} lit up` +
        (hits.size > BEST ? ` (the best ${BEST} in bold)` : "");
    } catch (error) {
      if (error.name === "AbortError") return;
      hits = new Map();
      status.textContent = error.message;
    }
    redraw();
  }

  async function start() {
    status.textContent = "loading the map…";
    const response = await fetch(canvas.dataset.points, { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) { status.textContent = body.detail || "the map could not be loaded"; return; }
    points = { ...body, x: Float64Array.from(body.x), y: Float64Array.from(body.y) };
    positionOf = new Map(points.index.map((index, i) => [index, i]));
    quadtree = d3.quadtree(points.index.map((_, i) => i), (i) => points.x[i], (i) => points.y[i]);
    binPoints();
    const zoom = d3.zoom().scaleExtent([1, 400]).on("zoom", (event) => { transform = event.transform; redraw(); });
    d3.select(canvas).call(zoom);
    if (focus !== null && positionOf.has(focus)) {
      const [x, y] = toScreen(positionOf.get(focus));
      const k = 12;
      d3.select(canvas).call(zoom.transform,
        d3.zoomIdentity.translate(canvas.clientWidth / 2, canvas.clientHeight / 2).scale(k).translate(-x, -y));
    }
    const moves = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    canvas.addEventListener("keydown", (event) => {
      const selection = d3.select(canvas);
      if (event.key === "+" || event.key === "=") zoom.scaleBy(selection, 1.5);
      else if (event.key === "-") zoom.scaleBy(selection, 1 / 1.5);
      else if (moves[event.key]) zoom.translateBy(selection, ...moves[event.key].map((v) => (60 * v) / transform.k));
      else return;
      event.preventDefault();
    });
    canvas.addEventListener("pointermove", (event) => {
      const found = featureAt(event);
      if (found !== hover) { hover = found; redraw(); }
      canvas.style.cursor = found === null ? "grab" : "pointer";
      if (found === null) tip.hidden = true; else showTip(found, event);
    });
    canvas.addEventListener("pointerleave", () => { hover = null; tip.hidden = true; redraw(); });
    canvas.addEventListener("click", (event) => {
      const found = featureAt(event);
      if (found !== null) location.href = featureUrl(points.index[found]);
    });
    form.addEventListener("submit", (event) => { event.preventDefault(); rememberState(); lightUp(); });
    form.elements.colour.addEventListener("change", () => { binPoints(); rememberState(); redraw(); });
    let typing = 0;
    form.elements.q.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { rememberState(); lightUp(); }, 300);
    });
    new ResizeObserver(redraw).observe(canvas);
    await lightUp();
    draw();
    canvas.dataset.drawn = String(points.index.length);
  }
  start();
})();
