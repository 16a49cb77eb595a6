// The draw-a-digit page: a canvas, the JSON API (/predict, /activations, /models), and heatmaps of what the model computes.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const modelSelect = document.getElementById("model");
const DEBOUNCE_MS = 250;
const STROKE = 20;
let inked = false;
let timer = null;
let generation = 0; // answers to older requests are dropped
const templatesCache = new Map();

// Colour maps: viridis for activations (0..max), blue-white-red for signed evidence and weights.
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const DIVERGING = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];

function colour(stops, t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

function clearPad() {
  context.fillStyle = "#fff";
  context.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

// A pen on a canvas: black round strokes `width` px wide; the callbacks run when a stroke starts, moves and ends.
// The digit pad and the number pad (number.js) both draw with it.
function attachPen(canvas, context, width, { down = () => {}, move = () => {}, up = () => {} }) {
  let drawing = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    const [x, y] = point(event);
    context.lineWidth = width;
    context.lineCap = context.lineJoin = "round";
    context.strokeStyle = "#000";
    context.beginPath();
    context.moveTo(x, y);
    context.lineTo(x + 0.01, y);
    context.stroke();
    down();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    context.lineTo(x, y);
    context.stroke();
    move();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => {
      if (!drawing) return;
      drawing = false;
      up();
    });
  }
}

attachPen(pad, context, STROKE, {
  down: () => {
    inked = true;
  },
  move: schedulePrediction,
  up: schedulePrediction,
});

function schedulePrediction() {
  clearTimeout(timer);
  timer = setTimeout(() => pad.toBlob((blob) => predict(blob, "drawing.png")), DEBOUNCE_MS);
}

document.getElementById("classify").addEventListener("click", () => {
  clearTimeout(timer);
  pad.toBlob((blob) => predict(blob, "drawing.png"));
});

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  resetResults();
});

document.getElementById("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) useFile(file);
  event.target.value = "";
});
pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dragging");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragging");
  const [file] = event.dataTransfer.files;
  if (file) useFile(file);
});

function useFile(file) {
  clearPad();
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    context.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  image.onerror = () => URL.revokeObjectURL(url); // not displayable here: the service will say why
  image.src = url;
  predict(file, file.name);
}

modelSelect.addEventListener("change", () => {
  if (lastUpload) predict(lastUpload.blob, lastUpload.name);
});

let lastUpload = null;

// The API key, when the service asks for one (401): entered by the user, kept for this tab's session only.
const KEY_STORAGE = "mnist-api-key";
const KEY_NEEDED = "This service needs an API key: enter it below the pad.";
const keyForm = document.getElementById("key-form");

async function apiFetch(url, options = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const response = await fetch(url, key ? { ...options, headers: { "X-API-Key": key } } : options);
  if (response.status === 401) {
    keyForm.hidden = false;
    throw new Error(key ? "The API key was refused: enter the right one below the pad." : KEY_NEEDED);
  }
  return response;
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, document.getElementById("api-key").value.trim());
  keyForm.hidden = true;
  document.getElementById("error").hidden = true;
  if (!modelSelect.options.length) loadModels();
  if (lastUpload) predict(lastUpload.blob, lastUpload.name);
});

async function predict(blob, name) {
  const mine = ++generation;
  lastUpload = { blob, name };
  const form = new FormData();
  form.append("file", blob, name);
  const model = modelSelect.value;
  try {
    const response = await apiFetch(`/predict?model=${encodeURIComponent(model)}`, { method: "POST", body: form });
    const body = await response.json();
    if (mine !== generation) return;
    if (!response.ok) return showError(body.detail || `The service answered ${response.status}.`);
    showPrediction(body);
    document.dispatchEvent(new CustomEvent("prediction", { detail: body })); // explain.js
    const maps = await (await apiFetch(`${body.activations_url}&encoding=base64`)).json();
    if (mine !== generation) return;
    const templates = maps.kind === "linear" ? await linearTemplates(model) : null;
    if (mine !== generation) return;
    showActivations(maps, templates);
  } catch (error) {
    if (mine === generation) showError(keyForm.hidden ? `Could not reach the service: ${error}` : error.message);
  }
}

async function linearTemplates(model) {
  if (!templatesCache.has(model)) {
    const response = await apiFetch(`/models/${encodeURIComponent(model)}/templates?encoding=base64`);
    templatesCache.set(model, response.ok ? await response.json() : null);
  }
  return templatesCache.get(model);
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = false;
  document.getElementById("digit").textContent = "?";
  document.getElementById("digit").classList.remove("not-digit");
  document.getElementById("confidence").textContent = "";
}

function resetResults() {
  generation++;
  lastUpload = null;
  document.getElementById("error").hidden = true;
  document.getElementById("digit").textContent = "–";
  document.getElementById("digit").classList.remove("not-digit");
  document.getElementById("confidence").textContent = "";
  renderBars(new Array(10).fill(0), -1);
  document.getElementById("maps").replaceChildren();
  document.getElementById("seen").getContext("2d").clearRect(0, 0, 112, 112);
  document.dispatchEvent(new Event("reset"));
}

function showPrediction(body) {
  document.getElementById("error").hidden = true;
  const digit = document.getElementById("digit");
  const notDigit = body.is_digit === false;
  // Not a digit: say so instead of a big number; the best guess and the score stay visible in the line below.
  digit.textContent = notDigit ? "That doesn't look like a digit" : body.digit;
  digit.classList.toggle("not-digit", notDigit);
  const score = `digit score ${(body.digit_score ?? 1).toFixed(2)}`;
  document.getElementById("confidence").textContent = notDigit
    ? `${score} · best guess ${body.digit} · ${body.model} v${body.model_version}`
    : `${(body.confidence * 100).toFixed(1)}% sure · ${score} · ${body.model} v${body.model_version}`;
  renderBars(body.probabilities, body.digit);
}

function renderBars(probabilities, best) {
  const bars = document.getElementById("bars");
  bars.replaceChildren(
    ...probabilities.map((p, digit) => {
      const row = document.createElement("div");
      row.className = digit === best ? "bar best" : "bar";
      row.innerHTML = `<span>${digit}</span><div class="track"><div class="fill"></div></div>` +
        `<span class="value">${(p * 100).toFixed(1)}%</span>`;
      row.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
      return row;
    }),
  );
}

function decodeFloats(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

function heatmap(values, offset, height, width, low, high, stops) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const span = high - low || 1;
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = colour(stops, (values[offset + i] - low) / span);
    image.data.set([r, g, b, 255], i * 4);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function scaleLegend(low, high, stops) {
  const legend = document.createElement("div");
  legend.className = "scale";
  const bar = document.createElement("canvas");
  bar.width = 120;
  bar.height = 1;
  const ctx = bar.getContext("2d");
  for (let x = 0; x < 120; x++) {
    const [r, g, b] = colour(stops, x / 119);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, 1);
  }
  legend.append(low.toPrecision(2), bar, high.toPrecision(2));
  return legend;
}

function layerGrid(title, description, values, shape, { low, high, stops, columns, captions }) {
  const [channels, height, width] = shape;
  const section = document.createElement("div");
  section.className = "layer";
  const head = document.createElement("div");
  head.className = "layer-head";
  const name = document.createElement("strong");
  name.textContent = title;
  const about = document.createElement("span");
  about.className = "hint";
  about.textContent = description;
  head.append(name, about, scaleLegend(low, high, stops));
  const grid = document.createElement("div");
  grid.className = "grid";
  grid.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
  for (let c = 0; c < channels; c++) {
    const figure = document.createElement("figure");
    figure.append(heatmap(values, c * height * width, height, width, low, high, stops));
    if (captions) figure.append(captions[c]);
    grid.append(figure);
  }
  section.append(head, grid);
  return section;
}

function showSeen(pixels) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  pixels.flat().forEach((v, i) => image.data.set([v, v, v, 255], i * 4));
  ctx.putImageData(image, 0, 0);
  const seen = document.getElementById("seen").getContext("2d");
  seen.imageSmoothingEnabled = false;
  seen.drawImage(canvas, 0, 0, 112, 112);
}

function showActivations(maps, templates) {
  showSeen(maps.input);
  const digits = [...Array(10).keys()].map(String);
  const sections = maps.layers.map((layer) => {
    const values = decodeFloats(layer.data);
    if (maps.kind === "linear") {
      const bound = Math.max(Math.abs(layer.min), Math.abs(layer.max));
      return layerGrid("Evidence per class", "weights × centred input: red counts for the class, blue against",
        values, layer.shape, { low: -bound, high: bound, stops: DIVERGING, columns: 5, captions: digits });
    }
    const [channels, height, width] = layer.shape;
    return layerGrid(layer.name, `${channels} maps of ${height}×${width} (ReLU output)`, values, layer.shape,
      { low: 0, high: layer.max, stops: VIRIDIS, columns: channels > 64 ? 16 : 8 });
  });
  if (templates) {
    const values = decodeFloats(templates.data);
    const bound = Math.max(Math.abs(templates.min), Math.abs(templates.max));
    sections.push(layerGrid("Weight templates", "each class's weights as a 28×28 image", values, templates.shape,
      { low: -bound, high: bound, stops: DIVERGING, columns: 5, captions: digits }));
  }
  document.getElementById("maps-title").textContent = `Inside ${maps.model}`;
  document.getElementById("maps-help").textContent = maps.kind === "linear"
    ? "A linear model has no layers: each class scores the image by summing its weights times the pixels."
    : "Each convolution layer's maps for this image: bright where a filter responds.";
  document.getElementById("maps").replaceChildren(...sections);
}

async function loadModels() {
  try {
    const models = await (await apiFetch("/models")).json();
    for (const model of models.filter((m) => m.status === "ready")) {
      const option = new Option(`${model.name} (${(model.test_accuracy * 100).toFixed(2)}%)`, model.name);
      option.selected = model.default;
      modelSelect.append(option);
    }
  } catch (error) {
    showError(keyForm.hidden ? `Could not load the models: ${error}` : error.message);
  }
}

clearPad();
resetResults();
loadModels();
