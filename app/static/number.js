// Number mode of the page: a wide pad, POST /read, each digit's box and answer drawn over the drawing, and a click
// on a digit shows its activation maps with app.js's own functions (showPrediction, showActivations,
// linearTemplates). Kept apart from app.js so the two change independently.
"use strict";

(() => {
  const numberPad = document.getElementById("number-pad");
  const boxes = document.getElementById("number-boxes");
  const ink = numberPad.getContext("2d");
  const overlay = boxes.getContext("2d");
  const digitPanel = document.getElementById("input-panel");
  const numberPanel = document.getElementById("number-panel");
  const NUMBER_STROKE = 14;
  const READ_DEBOUNCE_MS = 400;
  let readTimer = null;
  let readGeneration = 0; // answers to older requests are dropped
  let lastNumber = null;

  function setMode(number) {
    numberPanel.hidden = !number;
    digitPanel.hidden = number;
    document.getElementById("mode-number").classList.toggle("active", number);
    document.getElementById("mode-digit").classList.toggle("active", !number);
  }
  document.getElementById("mode-number").addEventListener("click", () => setMode(true));
  document.getElementById("mode-digit").addEventListener("click", () => setMode(false));

  function clearNumber() {
    ink.fillStyle = "#fff";
    ink.fillRect(0, 0, numberPad.width, numberPad.height);
    overlay.clearRect(0, 0, boxes.width, boxes.height);
    readGeneration++;
    lastNumber = null;
    document.getElementById("number-text").textContent = "–";
    document.getElementById("number-confidence").textContent = "";
    document.getElementById("number-digits").replaceChildren();
  }

  attachPen(numberPad, ink, NUMBER_STROKE, {
    down: () => {
      clearTimeout(readTimer); // the number is not finished: read it after this stroke
      overlay.clearRect(0, 0, boxes.width, boxes.height); // the boxes describe the drawing as it was
    },
    up: scheduleRead,
  });

  function scheduleRead() {
    clearTimeout(readTimer);
    readTimer = setTimeout(() => numberPad.toBlob((blob) => readNumber(blob, "number.png", 1)), READ_DEBOUNCE_MS);
  }

  document.getElementById("number-read").addEventListener("click", () => {
    clearTimeout(readTimer);
    numberPad.toBlob((blob) => readNumber(blob, "number.png", 1));
  });
  document.getElementById("number-clear").addEventListener("click", clearNumber);
  document.getElementById("number-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) showFile(file);
    event.target.value = "";
  });
  document.getElementById("model").addEventListener("change", () => {
    if (lastNumber && !numberPanel.hidden) readNumber(lastNumber.blob, lastNumber.name, lastNumber.scale);
  });

  // An uploaded picture is drawn fitted in the pad; its boxes, in the picture's pixels, are scaled the same way.
  function showFile(file) {
    clearNumber();
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = () => {
      const scale = Math.min(numberPad.width / image.width, numberPad.height / image.height);
      ink.drawImage(image, 0, 0, image.width * scale, image.height * scale);
      URL.revokeObjectURL(url);
      readNumber(file, file.name, scale);
    };
    image.onerror = () => {
      URL.revokeObjectURL(url);
      readNumber(file, file.name, 1); // not displayable here: the service will say why
    };
    image.src = url;
  }

  async function readNumber(blob, name, scale) {
    const mine = ++readGeneration;
    lastNumber = { blob, name, scale };
    const form = new FormData();
    form.append("file", blob, name);
    const model = document.getElementById("model").value;
    try {
      const response = await fetch(`/read?model=${encodeURIComponent(model)}`, { method: "POST", body: form });
      const body = await response.json();
      if (mine !== readGeneration) return;
      if (!response.ok) return showNumberError(body.detail || `The service answered ${response.status}.`);
      document.getElementById("error").hidden = true;
      showReading(body, scale);
    } catch (error) {
      if (mine === readGeneration) showNumberError(`Could not reach the service: ${error}`);
    }
  }

  function showNumberError(message) {
    overlay.clearRect(0, 0, boxes.width, boxes.height);
    document.getElementById("number-text").textContent = "?";
    document.getElementById("number-confidence").textContent = message;
    document.getElementById("number-digits").replaceChildren();
  }

  function showReading(body, scale) {
    document.getElementById("number-text").textContent = body.text;
    document.getElementById("number-confidence").textContent =
      `${(body.confidence * 100).toFixed(1)}% sure of the whole number · ${body.model} v${body.model_version}`;
    overlay.clearRect(0, 0, boxes.width, boxes.height);
    overlay.font = "bold 16px system-ui, sans-serif";
    overlay.lineWidth = 2;
    for (const mark of body.ignored) {
      const [x, y, w, h] = mark.box.map((v) => v * scale);
      overlay.setLineDash([4, 3]);
      overlay.strokeStyle = "#9aa3b2";
      overlay.strokeRect(x, y, w, h);
    }
    overlay.setLineDash([]);
    const chips = body.digits.map((digit, index) => {
      const [x, y, w, h] = digit.box.map((v) => v * scale);
      overlay.strokeStyle = "#2f6fde";
      overlay.strokeRect(x - 2, y - 2, w + 4, h + 4);
      const label = `${digit.digit} ${(digit.confidence * 100).toFixed(0)}%`;
      overlay.fillStyle = "#2f6fde";
      overlay.fillRect(x - 2, Math.max(0, y - 22), overlay.measureText(label).width + 8, 20);
      overlay.fillStyle = "#fff";
      overlay.fillText(label, x + 2, Math.max(15, y - 7));
      const chip = document.createElement("button");
      chip.type = "button";
      chip.textContent = label;
      chip.title = `digit ${index + 1}: show what the model saw`;
      chip.addEventListener("click", () => showDigit(body, digit, chip));
      return chip;
    });
    document.getElementById("number-digits").replaceChildren(...chips);
  }

  // The clicked digit in the page's result panel and maps, as if it had been drawn alone.
  async function showDigit(body, digit, chip) {
    for (const other of document.querySelectorAll("#number-digits button")) other.classList.remove("selected");
    chip.classList.add("selected");
    showPrediction({ ...digit, model: body.model, model_version: body.model_version });
    const maps = await (await fetch(`${digit.activations_url}&encoding=base64`)).json();
    const templates = maps.kind === "linear" ? await linearTemplates(body.model) : null;
    showActivations(maps, templates);
  }

  clearNumber();
})();
