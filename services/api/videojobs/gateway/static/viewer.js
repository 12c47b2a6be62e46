// The videojobs results viewer. Plain JavaScript, no libraries, no requests outside
// this service: it reads ../status/{id}, ../results/{id} and ../frames/{id}/{n}.jpg.
// Every piece of text from the results goes in through textContent, never as HTML.
"use strict";

(function () {
  const jobId = document.body.dataset.jobId;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const THUMBS_PER_PAGE = 120;
  // One colour per class id, the order the server's annotated images use (videojobs/api/frames.py).
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
  ];

  const state = {
    doc: null,
    frames: [],
    current: 0,
    hiddenClasses: new Set(),
    minConfidence: 0,
    serverBoxes: false,
    timer: null,
    thumbsShown: 0,
    ocrLines: [],
  };

  const $ = (id) => document.getElementById(id);

  // `style` is an object applied through the CSSOM: the page's CSP refuses inline style attributes.
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "style") Object.assign(node.style, v);
      else node.setAttribute(k, v);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function colour(classId) {
    const [r, g, b] = PALETTE[classId % PALETTE.length];
    return `rgb(${r}, ${g}, ${b})`;
  }

  function inkFor(classId) {
    const [r, g, b] = PALETTE[classId % PALETTE.length];
    return r + g + b > 380 ? "#000" : "#fff";
  }

  function formatTime(ms) {
    const s = ms / 1000;
    const minutes = Math.floor(s / 60);
    return `${minutes}:${(s - minutes * 60).toFixed(2).padStart(5, "0")}`;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function frameUrl(frameIndex, annotated) {
    return `../frames/${jobId}/${frameIndex}.jpg${annotated ? "?annotated=1" : ""}`;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      throw new Error((body && (body.detail || body.title)) || `${response.status} ${response.statusText}`);
    }
    return body;
  }

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = kind || "";
    box.hidden = false;
  }

  function visible(det) {
    return !state.hiddenClasses.has(det.class_name) && det.confidence >= state.minConfidence;
  }

  function detectionLabel(det) {
    const track = det.track_id === null || det.track_id === undefined ? "" : ` #${det.track_id}`;
    return `${det.class_name} ${det.confidence.toFixed(2)}${track}`;
  }

  // Boxes, labels, confidences and track ids of one frame, in the video's pixel coordinates.
  function drawBoxes(svg, frame) {
    const video = state.doc.video;
    const w = video.width;
    const h = video.height;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.replaceChildren();
    const stroke = Math.max(2, w / 320);
    const fontSize = Math.max(10, h / 26);
    for (const line of frame.result.ocr) {
      const b = line.box;
      svg.appendChild(svgEl("rect", {
        class: "ocr-box", x: b.x1, y: b.y1, width: Math.max(0, b.x2 - b.x1), height: Math.max(0, b.y2 - b.y1),
        "stroke-width": Math.max(1, stroke / 2),
      }));
    }
    frame.result.detections.forEach((det, index) => {
      if (!visible(det)) return;
      const b = det.box;
      const group = svgEl("g", {
        class: "det", "data-index": index, "data-class": det.class_name, "data-confidence": det.confidence,
        "data-track": det.track_id === null || det.track_id === undefined ? "" : det.track_id,
      });
      group.appendChild(svgEl("rect", {
        class: "box", x: b.x1, y: b.y1, width: Math.max(0, b.x2 - b.x1), height: Math.max(0, b.y2 - b.y1),
        stroke: colour(det.class_id), "stroke-width": stroke,
      }));
      const label = detectionLabel(det);
      const labelW = label.length * fontSize * 0.6 + stroke * 2;
      const labelH = fontSize * 1.25;
      const ly = b.y1 - labelH >= 0 ? b.y1 - labelH : b.y1;
      const lx = Math.min(Math.max(0, b.x1), Math.max(0, w - labelW));
      group.appendChild(svgEl("rect", { class: "label-bg", x: lx, y: ly, width: labelW, height: labelH,
                                         fill: colour(det.class_id) }));
      group.appendChild(svgEl("text", { class: "label", x: lx + stroke, y: ly + fontSize, "font-size": fontSize,
                                         fill: inkFor(det.class_id) }, label));
      svg.appendChild(group);
    });
  }

  // -- the player ---------------------------------------------------------------------------------
  function show(position) {
    const frames = state.frames;
    if (!frames.length) return;
    state.current = Math.max(0, Math.min(frames.length - 1, position));
    const frame = frames[state.current];
    const img = $("frame-image");
    img.hidden = false;
    $("no-image").hidden = true;
    img.src = frameUrl(frame.frame_index, state.serverBoxes);
    $("overlay").hidden = state.serverBoxes;
    drawBoxes($("overlay"), frame);
    $("scrubber").value = String(state.current);
    const shown = frame.result.detections.filter(visible).length;
    const total = frame.result.detections.length;
    $("frame-label").textContent =
      `frame ${frame.frame_index} (${state.current + 1} of ${frames.length}) at ${formatTime(frame.timestamp_ms)}: ` +
      `${shown} of ${plural(total, "object")} shown`;
    renderDetectionTable(frame);
    renderFrameText(frame);
    moveTimelineCursor(frame.timestamp_ms);
    for (const node of document.querySelectorAll("#thumbs figure.current")) node.classList.remove("current");
    const thumb = document.querySelector(`#thumbs figure[data-position="${state.current}"]`);
    if (thumb) thumb.classList.add("current");
    const next = frames[state.current + 1];
    if (next) new Image().src = frameUrl(next.frame_index, state.serverBoxes);  // smooth stepping
  }

  function renderDetectionTable(frame) {
    const body = $("detections").querySelector("tbody");
    body.replaceChildren();
    for (const det of frame.result.detections) {
      if (!visible(det)) continue;
      const row = el("tr");
      const name = el("td");
      name.appendChild(el("span", { class: "swatch", style: { background: colour(det.class_id) } }));
      name.appendChild(document.createTextNode(det.class_name));
      row.appendChild(name);
      row.appendChild(el("td", {}, det.confidence.toFixed(2)));
      row.appendChild(el("td", {}, det.track_id === null || det.track_id === undefined ? "" : `#${det.track_id}`));
      const b = det.box;
      row.appendChild(el("td", {}, `${Math.round(b.x1)},${Math.round(b.y1)} to ${Math.round(b.x2)},${Math.round(b.y2)}`));
      body.appendChild(row);
    }
  }

  function renderFrameText(frame) {
    const list = $("frame-text");
    list.replaceChildren();
    for (const line of frame.result.ocr) {
      list.appendChild(el("li", {}, `“${line.text}” (${line.confidence.toFixed(2)})`));
    }
  }

  function play() {
    if (state.timer !== null) {
      clearInterval(state.timer);
      state.timer = null;
      $("play").textContent = "Play";
      return;
    }
    const rate = Math.min(8, Math.max(1, state.doc.sampling.sample_fps || 1));
    if (state.current >= state.frames.length - 1) show(0);
    state.timer = setInterval(() => {
      if (state.current >= state.frames.length - 1) {
        play();
        return;
      }
      show(state.current + 1);
    }, 1000 / rate);
    $("play").textContent = "Pause";
  }

  // -- filters ----------------------------------------------------------------------------------------
  function renderClassFilters() {
    const counts = new Map();
    for (const frame of state.frames) {
      for (const det of frame.result.detections) {
        const entry = counts.get(det.class_name) || { classId: det.class_id, count: 0 };
        entry.count += 1;
        counts.set(det.class_name, entry);
      }
    }
    const box = $("class-filters");
    box.replaceChildren();
    if (!counts.size) box.appendChild(el("p", { class: "muted" }, "No objects were detected."));
    for (const [name, { classId, count }] of [...counts.entries()].sort((a, b) => b[1].count - a[1].count)) {
      const label = el("label", { class: "class-filter" });
      const box2 = el("input", { type: "checkbox", value: name });
      box2.checked = true;
      box2.addEventListener("change", () => {
        if (box2.checked) state.hiddenClasses.delete(name);
        else state.hiddenClasses.add(name);
        refresh();
      });
      label.appendChild(box2);
      label.appendChild(el("span", { class: "swatch", style: { background: colour(classId) } }));
      label.appendChild(document.createTextNode(`${name} (${count})`));
      box.appendChild(label);
    }
  }

  let refreshQueued = false;
  function refresh() {
    if (refreshQueued) return;
    refreshQueued = true;
    requestAnimationFrame(() => {
      refreshQueued = false;
      show(state.current);
      renderTimeline();
      for (const figure of document.querySelectorAll("#thumbs figure")) {
        drawBoxes(figure.querySelector("svg"), state.frames[Number(figure.dataset.position)]);
      }
    });
  }

  // -- track timeline ---------------------------------------------------------------------------------
  function nearestPosition(frameIndex) {
    const frames = state.frames;
    let lo = 0;
    let hi = frames.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (frames[mid].frame_index < frameIndex) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function timelineSpan() {
    const video = state.doc.video;
    const last = state.frames.length ? state.frames[state.frames.length - 1].timestamp_ms : 0;
    return Math.max(video.duration_ms || 0, last, 1);
  }

  function renderTimeline() {
    const box = $("timeline");
    const cursor = $("timeline-cursor");
    box.replaceChildren(cursor);
    const span = timelineSpan();
    const tracks = state.doc.tracks.filter((t) => !state.hiddenClasses.has(t.class_name));
    if (!state.doc.tracks.length) {
      box.appendChild(el("p", { class: "muted" }, "No tracks: the pipeline did not follow objects across frames."));
      return;
    }
    for (const track of tracks) {
      const row = el("div", { class: "track-row", "data-track": track.track_id, "data-class": track.class_name });
      row.appendChild(el("span", { class: "track-label" }, `#${track.track_id} ${track.class_name}`));
      const lane = el("div", { class: "track-lane" });
      const left = (100 * track.start_ms) / span;
      const width = Math.max(0.6, (100 * (track.end_ms - track.start_ms)) / span);
      const bar = el("button", {
        type: "button", class: "track-bar",
        style: { left: `${left}%`, width: `${width}%`, background: colour(track.class_id) },
        title: `#${track.track_id} ${track.class_name}: ${formatTime(track.start_ms)} to ${formatTime(track.end_ms)}, ` +
               `seen in ${track.frames} analysed frames`,
      });
      bar.addEventListener("click", () => show(nearestPosition(track.first_frame_index)));
      lane.appendChild(bar);
      row.appendChild(lane);
      box.appendChild(row);
    }
    if (state.frames.length) moveTimelineCursor(state.frames[state.current].timestamp_ms);
  }

  function moveTimelineCursor(ms) {
    const cursor = $("timeline-cursor");
    cursor.style.setProperty("--at", String(ms / timelineSpan()));
  }

  // -- OCR text ----------------------------------------------------------------------------------------
  function collectOcr() {
    state.ocrLines = [];
    state.frames.forEach((frame, position) => {
      for (const line of frame.result.ocr) {
        state.ocrLines.push({ position, frame, text: line.text, confidence: line.confidence });
      }
    });
  }

  function renderOcr() {
    const query = $("ocr-search").value.trim().toLowerCase();
    const list = $("ocr-list");
    list.replaceChildren();
    let shown = 0;
    for (const line of state.ocrLines) {
      const at = query ? line.text.toLowerCase().indexOf(query) : -1;
      if (query && at < 0) continue;
      shown += 1;
      const item = el("li", { class: "ocr-line", "data-frame": line.frame.frame_index });
      item.appendChild(el("span", { class: "when" }, `${formatTime(line.frame.timestamp_ms)} frame ${line.frame.frame_index}`));
      const text = el("span", { class: "text" });
      if (at >= 0) {
        text.appendChild(document.createTextNode(line.text.slice(0, at)));
        text.appendChild(el("mark", {}, line.text.slice(at, at + query.length)));
        text.appendChild(document.createTextNode(line.text.slice(at + query.length)));
      } else {
        text.textContent = line.text;
      }
      item.appendChild(text);
      item.appendChild(el("span", { class: "muted" }, line.confidence.toFixed(2)));
      item.addEventListener("click", () => show(line.position));
      list.appendChild(item);
    }
    $("ocr-count").textContent = state.ocrLines.length
      ? `${shown} of ${state.ocrLines.length} lines`
      : "No text was read in this job.";
  }

  // -- thumbnails --------------------------------------------------------------------------------------
  function renderMoreThumbs() {
    const box = $("thumbs");
    const video = state.doc.video;
    const end = Math.min(state.frames.length, state.thumbsShown + THUMBS_PER_PAGE);
    for (let position = state.thumbsShown; position < end; position++) {
      const frame = state.frames[position];
      const figure = el("figure", { "data-position": position, "data-frame": frame.frame_index });
      const stage = el("div", { class: "thumb-stage", style: { aspectRatio: `${video.width} / ${video.height}` } });
      const img = el("img", { loading: "lazy", alt: `frame ${frame.frame_index}`, src: frameUrl(frame.frame_index) });
      img.addEventListener("error", () => { img.hidden = true; });
      stage.appendChild(img);
      const svg = svgEl("svg", { preserveAspectRatio: "none", "aria-hidden": "true" });
      drawBoxes(svg, frame);
      stage.appendChild(svg);
      figure.appendChild(stage);
      figure.appendChild(el("figcaption", {},
        `#${frame.frame_index} ${formatTime(frame.timestamp_ms)}: ${plural(frame.result.detections.length, "object")}`));
      figure.addEventListener("click", () => {
        show(position);
        $("player").scrollIntoView({ behavior: "smooth" });
      });
      box.appendChild(figure);
    }
    state.thumbsShown = end;
    $("more-thumbs").hidden = end >= state.frames.length;
  }

  // -- start ---------------------------------------------------------------------------------------------
  function summary(job, doc) {
    const parts = [job.status, `pipeline ${job.pipeline_id}`];
    if (doc) {
      const v = doc.video;
      const detections = doc.results.reduce((n, f) => n + f.result.detections.length, 0);
      parts.push(`${v.width}x${v.height} at ${v.fps} fps, ${formatTime(v.duration_ms)}`,
                 `${doc.results.length} analysed frames`, `${detections} detections`,
                 `${doc.tracks.length} tracks`, `${state.ocrLines.length} text lines`);
    } else if (job.frames_total) {
      parts.push(`${job.frames_done} of ${job.frames_total} frames analysed`);
    }
    return parts.join(" · ");
  }

  function init(job, doc) {
    state.doc = doc;
    state.frames = doc.results;
    collectOcr();
    $("summary").textContent = summary(job, doc);
    const stage = $("stage");
    stage.style.aspectRatio = `${doc.video.width} / ${doc.video.height}`;
    $("frame-image").addEventListener("error", () => {
      $("frame-image").hidden = true;
      $("no-image").hidden = false;
      $("overlay").hidden = false;
    });
    $("scrubber").max = String(Math.max(0, state.frames.length - 1));
    $("scrubber").addEventListener("input", (e) => show(Number(e.target.value)));
    $("first").addEventListener("click", () => show(0));
    $("prev").addEventListener("click", () => show(state.current - 1));
    $("next").addEventListener("click", () => show(state.current + 1));
    $("last").addEventListener("click", () => show(state.frames.length - 1));
    $("play").addEventListener("click", play);
    $("server-boxes").addEventListener("change", (e) => {
      state.serverBoxes = e.target.checked;
      show(state.current);
    });
    $("min-confidence").addEventListener("input", (e) => {
      state.minConfidence = Number(e.target.value);
      $("min-confidence-value").textContent = state.minConfidence.toFixed(2);
      refresh();
    });
    $("ocr-search").addEventListener("input", renderOcr);
    $("more-thumbs").addEventListener("click", renderMoreThumbs);
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement && e.target.type !== "checkbox" && e.target.type !== "range") return;
      const keys = { ArrowLeft: () => show(state.current - 1), ArrowRight: () => show(state.current + 1),
                     Home: () => show(0), End: () => show(state.frames.length - 1), " ": play };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
    renderClassFilters();
    renderTimeline();
    renderOcr();
    renderMoreThumbs();
    $("content").hidden = false;
    if (!state.frames.length) showMessage("The job finished without analysed frames.");
    show(0);
    document.body.dataset.ready = "true";
  }

  async function start() {
    let job;
    try {
      job = await getJSON(`../status/${jobId}`);
    } catch (e) {
      showMessage(`Cannot load the job: ${e.message}`, "error");
      return;
    }
    $("summary").textContent = summary(job, null);
    if (job.status === "PENDING" || job.status === "RUNNING") {
      showMessage(`The job is ${job.status}; this page loads its results when it is done.`);
      setTimeout(start, 2000);
      return;
    }
    if (job.status !== "COMPLETED") {
      showMessage(`The job ${job.status}${job.error_message ? `: ${job.error_message}` : ""}`, "error");
      return;
    }
    $("message").hidden = true;
    try {
      init(job, await getJSON(`../results/${jobId}`));
    } catch (e) {
      showMessage(`Cannot load the results: ${e.message}`, "error");
    }
  }

  start();
})();
