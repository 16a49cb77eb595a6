// Attribution maps under the prediction (GET explain_url): which pixels of the 28x28 image pushed the model towards
// a digit (red) or away from it (blue). Uses app.js's apiFetch, colour, DIVERGING, decodeFloats and scaleLegend.
"use strict";

const explainBox = document.getElementById("explain");
const methodSelect = document.getElementById("explain-method");
const targetSelect = document.getElementById("explain-target");
const METHOD_NAMES = {
  integrated_gradients: "Integrated gradients",
  occlusion: "Occlusion",
  gradcam: "Grad-CAM",
  exact: "Exact (weights × input)",
};
let explainUrl = null;
let explainGeneration = 0;

document.addEventListener("prediction", (event) => {
  explainUrl = event.detail.explain_url;
  const predicted = event.detail.digit;
  targetSelect.replaceChildren(new Option(`the prediction (${predicted})`, ""),
    ...[...Array(10).keys()].filter((d) => d !== predicted).map((d) => new Option(`why not a ${d}?`, String(d))));
  methodSelect.replaceChildren(); // the model's methods come with the first answer
  explain();
});
document.addEventListener("reset", () => {
  explainGeneration++;
  explainUrl = null;
  explainBox.hidden = true;
});
methodSelect.addEventListener("change", explain);
targetSelect.addEventListener("change", explain);

async function explain() {
  if (!explainUrl) return;
  const mine = ++explainGeneration;
  let url = `${explainUrl}&encoding=base64`;
  if (methodSelect.value) url += `&method=${encodeURIComponent(methodSelect.value)}`;
  if (targetSelect.value) url += `&target=${targetSelect.value}`;
  try {
    const response = await apiFetch(url);
    const body = await response.json();
    if (mine !== explainGeneration) return;
    if (!response.ok) throw new Error(body.detail || `The service answered ${response.status}.`);
    showExplanation(body);
  } catch (error) {
    if (mine !== explainGeneration) return;
    explainBox.hidden = false;
    document.getElementById("explain-note").textContent = `No explanation: ${error.message}`;
  }
}

function showExplanation(body) {
  if (!methodSelect.options.length) {
    methodSelect.replaceChildren(...body.methods.map((m) => new Option(METHOD_NAMES[m] || m, m)));
  }
  methodSelect.value = body.method;
  const values = decodeFloats(body.attribution);
  const bound = Math.max(Math.abs(body.min), Math.abs(body.max)) || 1;
  drawAttribution(values, body.input.flat(), bound);
  document.getElementById("explain-scale").replaceChildren(scaleLegend(-bound, bound, DIVERGING));
  const settings = Object.entries(body.settings).map(([k, v]) => `${k} ${v}`).join(", ");
  const completeness = body.completeness_error == null ? "" :
    ` Sum of the map vs the logit's change from black: off by ${(body.completeness_error * 100).toFixed(1)}%.`;
  document.getElementById("explain-note").textContent =
    `Why ${body.target}: red pixels pushed the ${body.target}'s score up, blue ones down ` +
    `(${METHOD_NAMES[body.method] || body.method}${settings ? `, ${settings}` : ""}; baseline: ${body.baseline}).` +
    completeness;
  explainBox.hidden = false;
}

function drawAttribution(values, pixels, bound) {
  // The digit the model saw in grey, the attribution over it: the stronger a pixel's value, the more opaque.
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const grey = 40 + pixels[i] * 0.5;
    const [r, g, b] = colour(DIVERGING, 0.5 + values[i] / (2 * bound));
    const alpha = Math.min(1, Math.abs(values[i]) / bound * 1.5);
    image.data.set([grey + (r - grey) * alpha, grey + (g - grey) * alpha, grey + (b - grey) * alpha, 255], i * 4);
  }
  ctx.putImageData(image, 0, 0);
  const view = document.getElementById("explain-map").getContext("2d");
  view.imageSmoothingEnabled = false;
  view.drawImage(canvas, 0, 0, 224, 224);
}
