// The datamint viewer: send a file to the model, draw what it found over the image.
// Plain JavaScript, no build step and no network beyond this server.
"use strict";

// Label colours, in the order labels first appear (the same as the overlay PNG writer).
const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
];
const ALPHA = 0.45;
const MIN_DISPLAY_WIDTH = 512;

const $ = (id) => document.getElementById(id);
const state = {
  metadata: null, view: null, labels: [], layers: [], boxes: [], index: 0, channel: 0,
};
// Files that each hold a whole volume or image; several DICOM files are one series instead.
const CHANNEL_FILE = /\.(nii|nii\.gz|npy|npz|png|jpe?g)$/i;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

async function loadMetadata() {
  const response = await fetch("metadata");
  if (!response.ok) throw new Error(`GET /metadata answered ${response.status}`);
  state.metadata = await response.json();
  const modes = state.metadata.supported_modes || [];
  const select = $("mode-select");
  select.replaceChildren(new Option("default (the model picks)", "default"));
  for (const mode of modes) select.add(new Option(mode, mode));
  $("model-summary").textContent =
    `${state.metadata.model_class || "model"} · ${state.metadata.task_type || "task not set"}` +
    ` · modes: ${modes.join(", ") || "default only"}`;
  renderParams();
  setupPromptTools();
}

function renderParams() {
  const mode = $("mode-select").value;
  const info = (state.metadata && state.metadata.mode_params || {})[mode] || {};
  const required = new Set(info.required || []);
  const box = $("mode-params");
  box.replaceChildren();
  for (const name of info.params || []) {
    if (name === "prompts") continue;  // drawn on the picture (the prompt tools)
    const label = document.createElement("label");
    label.textContent = `${name}${required.has(name) ? " (required)" : ""}`;
    const input = document.createElement("input");
    input.name = name;
    input.dataset.param = name;
    input.required = required.has(name);
    input.id = `param-${name}`;
    label.htmlFor = input.id;
    box.append(label, input);
  }
}

function readParams() {
  const params = {};
  const mode = $("mode-select").value;
  if (mode !== "default") params.mode = mode;
  for (const input of $("mode-params").querySelectorAll("input[data-param]")) {
    if (input.value === "") continue;
    try { params[input.dataset.param] = JSON.parse(input.value); }
    catch (_) { params[input.dataset.param] = input.value; }
  }
  const confidence = $("confidence-input").value;
  if (confidence !== "") params.confidence_threshold = Number(confidence);
  return params;
}

// A channel's name: its file's name without the suffix, made unique among the files picked.
function channelNames(files) {
  const names = [];
  for (const file of files) {
    const stem = file.name.replace(/\.(nii\.gz|[^.]+)$/i, "") || "channel";
    let name = stem, count = 2;
    while (names.includes(name)) name = `${stem}-${count++}`;
    names.push(name);
  }
  return names;
}

function pickedFiles() {
  const files = Array.from($("file-input").files);
  $("channels-input").checked = files.length > 1 && files.every((f) => CHANNEL_FILE.test(f.name));
}

async function predict(event) {
  event.preventDefault();
  prompts.items = [];
  await runPrediction(false);
}

// Send the picked file(s) with the form's params and the prompts drawn so far; keepView
// keeps the slice shown (a refresh after a prompt).
async function runPrediction(keepView) {
  const files = Array.from($("file-input").files);
  if (!files.length) { setStatus("Pick a file first.", true); return; }
  const body = new FormData();
  const asChannels = $("channels-input").checked && files.length > 1;
  const names = asChannels ? channelNames(files) : [];
  const pixelData = asChannels
    ? { encoding: "multipart", parts: names }
    : { encoding: "multipart", part: "image" };
  const resource = { id: files[0].name, pixel_data: pixelData };
  const params = readParams();
  if (prompts.items.length) params.prompts = promptsJson();
  body.append("request", JSON.stringify({ resources: [resource], params }));
  files.forEach((file, i) => body.append(asChannels ? names[i] : "image", file, file.name));
  $("predict-button").disabled = true;
  document.body.dataset.state = "predicting";
  const ticket = (state.ticket = (state.ticket || 0) + 1);  // only the latest answer is shown
  setStatus(`Predicting on ${files.length > 1 ? files.length + " files" : files[0].name}…`);
  const started = performance.now();
  try {
    const response = await fetch("viewer/predict", { method: "POST", body });
    const answer = await response.json();
    if (ticket !== state.ticket) return;
    if (!response.ok) throw new Error(`${response.status} ${answer.error_code}: ${answer.message}`);
    show(answer, keepView, params.prompts);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const count = answer.predictions[0].length;
    setStatus(`Done in ${seconds} s: ${count} annotation${count === 1 ? "" : "s"}.`);
    document.body.dataset.state = "done";
  } catch (error) {
    if (ticket !== state.ticket) return;
    setStatus(String(error.message || error), true);
    document.body.dataset.state = "error";
  } finally {
    $("predict-button").disabled = false;
  }
}

function decodeBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function decodeRle(mask) {
  const size = mask.shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(size);
  let position = 0;
  mask.rle.forEach((run, i) => {
    if (i % 2 === 1) out.fill(1, position, position + run);
    position += run;
  });
  return out;
}

function show(answer, keepView = false, sentPrompts = undefined) {
  const view = answer.image;
  view.pixels = decodeBase64(view.data);
  const [count, height, width] = view.shape;
  state.view = view;
  state.labels = [];
  state.layers = [];
  state.boxes = [];
  const colourOf = (name) => {
    if (!state.labels.includes(name)) state.labels.push(name);
    return PALETTE[state.labels.indexOf(name) % PALETTE.length];
  };
  for (const annotation of answer.predictions[0]) {
    const colour = colourOf(annotation.identifier);
    const index = annotation.slice_index ?? annotation.frame_index ?? null;
    if (annotation.type === "segmentation") {
      const data = decodeRle(annotation.mask);
      const perSlice = annotation.mask.shape.length === 3;
      state.layers.push({ data, perSlice, index, colour });
    } else if (annotation.type === "square") {
      state.boxes.push({ ...annotation, index, colour });
    }
  }
  const channelSelect = $("channel-select");
  channelSelect.replaceChildren(...(view.channel_names || []).map((name, i) => new Option(name, i)));
  state.channel = 0;
  $("channel-controls").hidden = !view.channel_names;
  const slider = $("slice-slider");
  slider.max = String(count - 1);
  if (!keepView || state.index >= count) state.index = busiestSlice(count, height * width);
  slider.value = String(state.index);
  $("slice-controls").hidden = count < 2;
  const canvas = $("view-canvas");
  canvas.width = width;
  canvas.height = height;
  const scale = Math.max(1, Math.ceil(MIN_DISPLAY_WIDTH / width));
  canvas.style.width = `${width * scale}px`;
  canvas.style.height = `${height * scale}px`;
  const legend = $("legend");
  legend.replaceChildren(...state.labels.map((name, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${PALETTE[i % PALETTE.length].join(",")})`;
    item.append(swatch, name);
    return item;
  }));
  const result = { predictions: answer.predictions };
  if (sentPrompts) result.prompts = sentPrompts;
  setDownload($("download-link"), result);
  $("prompts-download").hidden = !sentPrompts;
  if (sentPrompts) setDownload($("prompts-link"), sentPrompts);
  $("view-canvas").classList.toggle("interactive", isInteractive());
  $("result").hidden = false;
  draw();
}

function busiestSlice(count, area) {
  let best = Math.floor(count / 2), bestCount = 0;
  for (let s = 0; s < count; s++) {
    let total = 0;
    for (const layer of state.layers) {
      if (layer.perSlice) {
        const slice = layer.data.subarray(s * area, (s + 1) * area);
        for (let i = 0; i < slice.length; i++) total += slice[i];
      } else if (layer.index === s) {
        total += layer.data.reduce((a, b) => a + b, 0);
      }
    }
    if (total > bestCount) { best = s; bestCount = total; }
  }
  return best;
}

function draw() {
  const view = state.view;
  const [, height, width] = view.shape;
  const channels = view.channels;
  const area = height * width;
  const s = state.index;
  const picture = new ImageData(width, height);
  const out = picture.data;
  const base = s * area * channels;
  const named = Boolean(view.channel_names);  // modalities: one gray channel at a time
  for (let p = 0; p < area; p++) {
    for (let c = 0; c < 3; c++) {
      const offset = named ? state.channel : (channels === 3 ? c : 0);
      out[4 * p + c] = view.pixels[base + p * channels + offset];
    }
    out[4 * p + 3] = 255;
  }
  for (const layer of state.layers) {
    let mask = null;
    if (layer.perSlice) mask = layer.data.subarray(s * area, (s + 1) * area);
    else if (layer.index === null || layer.index === s) mask = layer.data;
    if (!mask) continue;
    for (let p = 0; p < area; p++) {
      if (!mask[p]) continue;
      const x = p % width, y = (p - x) / width;
      const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !mask[p - 1] || !mask[p + 1] || !mask[p - width] || !mask[p + width];
      for (let c = 0; c < 3; c++) {
        out[4 * p + c] = edge ? layer.colour[c]
          : Math.round((1 - ALPHA) * out[4 * p + c] + ALPHA * layer.colour[c]);
      }
    }
  }
  const context = $("view-canvas").getContext("2d");
  context.putImageData(picture, 0, 0);
  for (const box of state.boxes) {
    if (box.index !== null && box.index !== s) continue;
    context.strokeStyle = `rgb(${box.colour.join(",")})`;
    context.lineWidth = 1;
    context.strokeRect(box.x_min + 0.5, box.y_min + 0.5, box.x_max - box.x_min, box.y_max - box.y_min);
  }
  drawPrompts(context, s);
  $("slice-label").textContent = `${s + 1} / ${view.shape[0]}`;
}

function setDownload(link, data) {
  const blob = new Blob([JSON.stringify(data, null, 1)], { type: "application/json" });
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
}

// --- prompts: clicks, boxes and scribbles for an interactive model ---------------------------
// Sent as the `prompts` param in index coordinates of the picture's grid: (d, h, w) for a
// volume (d the slice shown), (h, w) for an image; see datamint_core/prompts.py.

const prompts = { items: [], drag: null };

function isInteractive() { return Boolean(state.metadata && state.metadata.interactive); }

function setupPromptTools() {
  $("prompt-tools").hidden = !isInteractive();
  if (!isInteractive()) return;
  const labels = state.metadata.prompt_labels || ["object"];
  $("prompt-label").replaceChildren(...labels.map((name) => new Option(name, name)));
}

function isVolume() { return state.view.kind === "volume"; }

function gridShape() {
  const [count, height, width] = state.view.shape;
  return isVolume() ? [count, height, width] : [height, width];
}

// The picture's pixel (row, column) under the pointer.
function pixelAt(event) {
  const canvas = $("view-canvas");
  const rect = canvas.getBoundingClientRect();
  const clamp = (v, n) => Math.min(n - 1, Math.max(0, v));
  return [
    clamp(Math.floor((event.clientY - rect.top) * canvas.height / rect.height), canvas.height),
    clamp(Math.floor((event.clientX - rect.left) * canvas.width / rect.width), canvas.width),
  ];
}

function gridPoint([row, column]) {
  return isVolume() ? [state.index, row, column] : [row, column];
}

function flatIndex([row, column]) {
  const [, height, width] = state.view.shape;
  return (isVolume() ? state.index * height * width : 0) + row * width + column;
}

// The pixels of a straight stroke between two pixels (inclusive).
function strokePixels(from, to) {
  const steps = Math.max(Math.abs(to[0] - from[0]), Math.abs(to[1] - from[1]), 1);
  const pixels = [];
  for (let i = 0; i <= steps; i++) {
    pixels.push([Math.round(from[0] + (to[0] - from[0]) * i / steps),
                 Math.round(from[1] + (to[1] - from[1]) * i / steps)]);
  }
  return pixels;
}

// Run lengths over the grid in C order, background first (the JSON form of a scribble).
function runLengths(flatIndices, size) {
  const sorted = Array.from(flatIndices).sort((a, b) => a - b);
  const counts = [];
  let position = 0;
  for (let i = 0; i < sorted.length;) {
    let end = i;
    while (end + 1 < sorted.length && sorted[end + 1] === sorted[end] + 1) end++;
    counts.push(sorted[i] - position, end - i + 1);
    position = sorted[end] + 1;
    i = end + 1;
  }
  counts.push(size - position);
  return counts;
}

function promptsJson() {
  const size = gridShape().reduce((a, b) => a * b, 1);
  const labels = {};
  for (const item of prompts.items) {
    const entry = labels[item.label] || (labels[item.label] = {});
    const list = entry[item.kind] || (entry[item.kind] = []);
    if (item.kind === "points") list.push({ at: item.at, positive: item.positive });
    else if (item.kind === "boxes") list.push({ start: item.start, end: item.end });
    else list.push({ counts: runLengths(item.pixels, size), positive: item.positive });
  }
  return { space: "index", labels };
}

function promptTool() {
  return document.querySelector("input[name=prompt-tool]:checked").value;
}

function addPrompt(item) {
  prompts.items.push({ label: $("prompt-label").value, ...item });
  promptsChanged();
}

function promptsChanged() {
  const count = prompts.items.length;
  $("prompt-count").textContent = count
    ? `${count} prompt${count === 1 ? "" : "s"}; the prediction refreshes after each.`
    : "No prompts.";
  runPrediction(true);
}

function startPrompt(event) {
  if (!state.view || !isInteractive() || event.button !== 0) return;
  event.preventDefault();
  const at = pixelAt(event);
  const positive = !(event.shiftKey || $("negative-input").checked);
  prompts.drag = { tool: promptTool(), start: at, last: at, positive,
                   pixels: new Set([flatIndex(at)]), slice: state.index };
}

function movePrompt(event) {
  const drag = prompts.drag;
  if (!drag) return;
  const at = pixelAt(event);
  if (drag.tool === "scribble") {
    for (const pixel of strokePixels(drag.last, at)) drag.pixels.add(flatIndex(pixel));
  }
  drag.last = at;
  draw();
}

function endPrompt(event) {
  const drag = prompts.drag;
  if (!drag) return;
  prompts.drag = null;
  const at = pixelAt(event);
  if (drag.tool === "point") {
    addPrompt({ kind: "points", at: gridPoint(drag.start), positive: drag.positive });
  } else if (drag.tool === "box") {
    const start = [Math.min(drag.start[0], at[0]), Math.min(drag.start[1], at[1])];
    const end = [Math.max(drag.start[0], at[0]), Math.max(drag.start[1], at[1])];
    addPrompt({ kind: "boxes", start: gridPoint(start), end: gridPoint(end) });
  } else {
    for (const pixel of strokePixels(drag.last, at)) drag.pixels.add(flatIndex(pixel));
    addPrompt({ kind: "scribbles", pixels: Array.from(drag.pixels), positive: drag.positive });
  }
}

// Markers of the prompts on the slice shown: white for positive, black for negative.
function drawPrompts(context, slice) {
  const [, height, width] = state.view.shape;
  const onSlice = (at) => !isVolume() || at[0] === slice;
  const rowColumn = (at) => (isVolume() ? at.slice(1) : at);
  const items = prompts.drag ? [...prompts.items, { kind: "drag", ...prompts.drag }] : prompts.items;
  for (const item of items) {
    if (item.kind === "points" && onSlice(item.at)) {
      const [row, column] = rowColumn(item.at);
      context.fillStyle = item.positive ? "#fff" : "#000";
      context.fillRect(column, row, 1, 1);
    } else if (item.kind === "boxes" && onSlice(item.start)) {
      const [top, left] = rowColumn(item.start);
      const [bottom, right] = rowColumn(item.end);
      context.strokeStyle = "#fff";
      context.lineWidth = 1;
      context.strokeRect(left + 0.5, top + 0.5, right - left, bottom - top);
    } else if (item.kind === "scribbles" || (item.kind === "drag" && item.tool === "scribble")) {
      context.fillStyle = item.positive ? "#fff" : "#000";
      const offset = isVolume() ? slice * height * width : 0;
      for (const flat of item.pixels) {
        const p = flat - offset;
        if (p >= 0 && p < height * width) context.fillRect(p % width, Math.floor(p / width), 1, 1);
      }
    }
  }
}

$("view-canvas").addEventListener("mousedown", startPrompt);
$("view-canvas").addEventListener("mousemove", movePrompt);
window.addEventListener("mouseup", endPrompt);
$("undo-button").addEventListener("click", () => {
  if (!prompts.items.length) return;
  prompts.items.pop();
  promptsChanged();
});
$("clear-button").addEventListener("click", () => {
  if (!prompts.items.length) return;
  prompts.items = [];
  promptsChanged();
});

$("mode-select").addEventListener("change", renderParams);
$("file-input").addEventListener("change", pickedFiles);
$("channel-select").addEventListener("change", (event) => {
  state.channel = Number(event.target.value);
  if (state.view) draw();
});
$("predict-form").addEventListener("submit", predict);
$("slice-slider").addEventListener("input", (event) => {
  state.index = Number(event.target.value);
  if (state.view) draw();
});
loadMetadata().then(
  () => { document.body.dataset.state = "ready"; },
  (error) => setStatus(`Cannot read the model's metadata: ${error.message}`, true),
);
