// slicenav navigate: keys -> POST /api/act -> draw what the server rendered and predicted. No build step, no CDN.
"use strict";

const KEYS = {
  w: "scroll_forward", s: "scroll_back",
  ArrowLeft: "move_left", ArrowRight: "move_right", ArrowUp: "move_up", ArrowDown: "move_down",
  t: "tilt_up", g: "tilt_down", f: "tilt_left", h: "tilt_right",
  q: "rotate_ccw", e: "rotate_cw",
  "+": "zoom_in", "=": "zoom_in", "-": "zoom_out",
  " ": "imagine", x: "shuffle", r: "reset",
};
const IMAGES = ["true", "predicted", "difference", "axial", "coronal", "sagittal"];
let busy = false;

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = reject;
    image.src = url;
  });
}

async function drawImages(images) {
  for (const name of IMAGES) {
    const canvas = document.getElementById(name);
    const context = canvas.getContext("2d");
    if (!images[name]) {
      context.clearRect(0, 0, canvas.width, canvas.height);
      continue;
    }
    const image = await loadImage(images[name]);
    canvas.width = image.width;
    canvas.height = image.height;
    context.drawImage(image, 0, 0);
  }
}

function drawPlot(history) {
  const canvas = document.getElementById("plot");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#444";
  context.strokeRect(0, 0, canvas.width, canvas.height);
  if (history.length === 0) return;
  const values = history.map((point) => point.psnr);
  const low = Math.min(...values, 10), high = Math.max(...values, 30);
  const x = (i) => (history.length === 1 ? canvas.width / 2 : (i / (history.length - 1)) * (canvas.width - 10) + 5);
  const y = (v) => canvas.height - 5 - ((v - low) / (high - low)) * (canvas.height - 10);
  context.fillStyle = "#888";
  context.fillText(`${high.toFixed(0)} dB`, 4, 12);
  context.fillText(`${low.toFixed(0)} dB`, 4, canvas.height - 8);
  for (let i = 0; i < history.length; i++) {
    context.fillStyle = history[i].imagined ? "#f93" : "#6cf";
    context.fillRect(x(i) - 2, y(history[i].psnr) - 2, 4, 4);
    if (i > 0) {
      context.strokeStyle = "#6cf";
      context.beginPath();
      context.moveTo(x(i - 1), y(history[i - 1].psnr));
      context.lineTo(x(i), y(history[i].psnr));
      context.stroke();
    }
  }
}

// "Go to" offers the session's planes: the three canonical ones, and those through the commissures when the
// session was given the head's landmarks (slicenav navigate --landmarks).
function offerPlanes(planes) {
  const select = document.getElementById("plane");
  const offered = Array.from(select.options, (option) => option.value);
  for (const plane of planes) if (!offered.includes(plane)) select.add(new Option(plane, plane));
}

async function show(state) {
  offerPlanes(state.planes);
  await drawImages(state.images);
  drawPlot(state.psnr_history);
  document.getElementById("pose").textContent = state.pose_text;
  document.getElementById("action").textContent = state.action_text;
  document.getElementById("psnr").textContent = state.psnr === null ? "–" : `${state.psnr.toFixed(2)} dB`;
  document.getElementById("mode").textContent =
    `${state.imagine ? "imagining (open loop)" : "closed loop"}, ${state.shuffled ? "wrong actions" : "true actions"}`;
  const t = state.timing_ms;
  document.getElementById("timing").textContent =
    t.render === undefined ? "–" : `render ${t.render.toFixed(1)} ms, predict ${t.predict.toFixed(1)} ms, encode ${t.encode.toFixed(1)} ms`;
  const status = document.getElementById("status");
  status.textContent = `step ${state.step}, slices ${state.slice_size.join(" x ")} px`;
  status.className = "";
  window.slicenavState = state;
  document.body.dataset.step = String(state.step);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function fail(message) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = "error";
}

async function request(url, options) {
  const response = await fetch(url, options);
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
  return payload;
}

async function act(action) {
  if (busy) return;
  busy = true;
  try {
    const body = JSON.stringify({ action });
    await show(await request("/api/act", { method: "POST", headers: { "Content-Type": "application/json" }, body }));
  } catch (error) {
    fail(String(error));
  } finally {
    busy = false;
  }
}

const PLAY_MS = 350; // how long each planned step stays on screen

// "Go to": the server plans to the named plane and executes the plan; the page plays the steps it took.
async function goto(event) {
  event.preventDefault();
  if (busy) return;
  busy = true;
  const plane = document.getElementById("plane").value, planner = document.getElementById("planner").value;
  const result = document.getElementById("goto-result");
  result.textContent = "planning…";
  try {
    const body = JSON.stringify({ plane, planner });
    const answer = await request("/api/goto", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    for (const frame of answer.frames) {
      await show(frame);
      await new Promise((resolve) => setTimeout(resolve, PLAY_MS));
    }
    const error = answer.error;
    result.textContent = `${answer.frames.length} steps; ${error.distance_mm.toFixed(1)} mm and ` +
      `${error.angle_deg.toFixed(1)}° from the ${plane} plane`;
    window.slicenavGoto = answer;
    document.body.dataset.gotos = String(Number(document.body.dataset.gotos || 0) + 1);
  } catch (error) {
    result.textContent = "–";
    fail(String(error));
  } finally {
    busy = false;
  }
}

document.getElementById("goto-form").addEventListener("submit", goto);

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLSelectElement) return; // keys on the plane and planner menus choose in them
  const action = KEYS[event.key] || KEYS[event.key.toLowerCase()];
  if (!action || event.ctrlKey || event.metaKey || event.altKey) return;
  event.preventDefault();
  act(action);
});

request("/api/state").then(show).catch((error) => fail(String(error)));
