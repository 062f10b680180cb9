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
}

function renderParams() {
  const mode = $("mode-select").value;
  const info = (state.metadata && state.metadata.mode_params || {})[mode] || {};
  const required = new Set(info.required || []);
  const box = $("mode-params");
  box.replaceChildren();
  for (const name of info.params || []) {
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
  const files = Array.from($("file-input").files);
  if (!files.length) { setStatus("Pick a file first.", true); return; }
  const body = new FormData();
  const asChannels = $("channels-input").checked && files.length > 1;
  const names = asChannels ? channelNames(files) : [];
  const pixelData = asChannels
    ? { encoding: "multipart", parts: names }
    : { encoding: "multipart", part: "image" };
  const resource = { id: files[0].name, pixel_data: pixelData };
  body.append("request", JSON.stringify({ resources: [resource], params: readParams() }));
  files.forEach((file, i) => body.append(asChannels ? names[i] : "image", file, file.name));
  $("predict-button").disabled = true;
  setStatus(`Predicting on ${files.length > 1 ? files.length + " files" : files[0].name}…`);
  const started = performance.now();
  try {
    const response = await fetch("viewer/predict", { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) throw new Error(`${response.status} ${answer.error_code}: ${answer.message}`);
    show(answer);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const count = answer.predictions[0].length;
    setStatus(`Done in ${seconds} s: ${count} annotation${count === 1 ? "" : "s"}.`);
    document.body.dataset.state = "done";
  } catch (error) {
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

function show(answer) {
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
  state.index = busiestSlice(count, height * width);
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
  const blob = new Blob([JSON.stringify({ predictions: answer.predictions }, null, 1)],
                        { type: "application/json" });
  const link = $("download-link");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
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
  $("slice-label").textContent = `${s + 1} / ${view.shape[0]}`;
}

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
