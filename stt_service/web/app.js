// The live page: the microphone to NATS as the service's own `chunk` messages, its results back.
// Talks NATS over WebSocket (nats.ws, vendored) and msgpack (@msgpack/msgpack, vendored): the
// same wire protocol as every other client (see the README's Protocol section).
import { connect } from "./vendor/nats.js";

const { encode, decode } = window.MessagePack;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const page = {
  nc: null,
  config: null,
  session: null, // the open session: { id, ctx, media, node, samples, sent, sub }
  latencies: [],
  finals: 0,
  interrupts: 0,
  cancelled: 0,
};

function clock() {
  return new Date().toLocaleTimeString([], { hour12: false });
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function showError(text) {
  const box = $("errors");
  const p = document.createElement("p");
  p.textContent = text;
  box.append(p);
  box.hidden = false;
}

function log(kind, text) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  li.textContent = `${clock()} ${text}`;
  $("log").append(li);
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  return v.length ? v[Math.floor(v.length / 2)] : null;
}

function showFigures() {
  $("n-finals").textContent = page.finals;
  const p50 = median(page.latencies);
  $("p50").textContent = p50 === null ? "–" : `${Math.round(p50)} ms`;
  $("n-interrupts").textContent = page.interrupts;
  $("n-cancelled").textContent = page.cancelled;
}

function publish(message) {
  const s = page.session;
  if (!page.nc || !s) return;
  try {
    page.nc.publish(`${page.config.input_subject}.${s.id}`, encode(message));
  } catch (err) {
    showError(`could not send ${message.type}: ${err.message || err}`);
  }
}

// --- results ------------------------------------------------------------------------------------
function latencyOf(message) {
  // the final's end in the session's audio -> when the page sent that audio
  const s = page.session;
  if (!s || typeof message.audio_end !== "number") return null;
  const sample = message.audio_end * s.rate;
  const i = s.sent.findIndex(([end]) => end >= sample - 1);
  if (i < 0) return null;
  const latency = performance.now() - s.sent[i][1];
  s.sent.splice(0, i); // later finals end later: what came before is not needed again
  return latency;
}

function addLine(kind, text, meta) {
  const li = document.createElement("li");
  li.className = kind === "final" ? "final" : `event ${kind}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(body);
  if (meta) {
    const m = document.createElement("span");
    m.className = "meta";
    m.textContent = meta;
    li.append(m);
  }
  $("finals").append(li);
}

function onResult(m) {
  switch (m.type) {
    case "transcript": {
      const text = (m.transcript || "").trim();
      if (m.is_final) {
        $("partial").textContent = "";
        log("final", `final #${m.sequence}: ${text}`);
        if (!text) return;
        const latency = latencyOf(m);
        if (latency !== null) page.latencies.push(latency);
        page.finals += 1;
        const meta = [
          latency === null ? null : `${Math.round(latency)} ms after its audio was sent`,
          typeof m.confidence === "number" ? `confidence ${m.confidence.toFixed(2)}` : null,
        ].filter(Boolean);
        addLine("final", text, meta.join(" · "));
        showFigures();
      } else if (m.event === "eager_end_of_turn") {
        // the turn is probably over: an agent would start its reply here
        const pct = Math.round(100 * (m.end_of_turn_confidence || 0));
        $("partial").textContent = text;
        log("eager", `probably done (${pct}%): ${text}`);
      } else if (m.event === "turn_resumed") {
        log("resumed", "turn resumed: the user went on (an agent drops the reply it began)");
      } else {
        $("partial").textContent = text;
        log("partial", `partial #${m.sequence}: ${text}`);
      }
      break;
    }
    case "interrupt":
      page.interrupts += 1;
      $("agent").checked = false; // the session is listening now
      addLine("interrupt", "interrupt: the user spoke over the agent", clock());
      log("interrupt", "interrupt");
      showFigures();
      break;
    case "interrupt_cancelled":
      page.cancelled += 1;
      $("agent").checked = true; // back to responding
      addLine("interrupt_cancelled", `interrupt taken back (${m.reason})`, clock());
      log("interrupt_cancelled", `interrupt taken back: ${m.reason}`);
      showFigures();
      break;
    case "error":
      showError(`${m.code}: ${m.message}`);
      log("error", `${m.code}: ${m.message}`);
      break;
    default:
      log(m.type || "unknown", JSON.stringify(m));
  }
}

// --- the microphone -----------------------------------------------------------------------------
async function audioGraph(media) {
  // 16 kHz where the browser resamples the microphone itself; otherwise the device's rate,
  // declared in `start` (the service resamples)
  for (const options of [{ sampleRate: 16000 }, {}]) {
    let ctx;
    try {
      ctx = new AudioContext(options);
      const source = ctx.createMediaStreamSource(media);
      await ctx.audioWorklet.addModule("worklet.js");
      return { ctx, source };
    } catch (err) {
      if (ctx) await ctx.close();
      if (!options.sampleRate) throw err;
    }
  }
  throw new Error("no audio context");
}

async function start() {
  $("mic").disabled = true;
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    showError(`no microphone: ${err.message || err.name} (allow the page to use it, or plug one in)`);
    $("mic").disabled = false;
    return;
  }
  const { ctx, source } = await audioGraph(media);
  const rate = ctx.sampleRate;
  const id = `web-${Math.random().toString(36).slice(2, 8)}`;
  const sub = page.nc.subscribe(`${page.config.output_subject}.${id}`, {
    callback: (err, msg) => {
      if (err) showError(`results: ${err.message || err}`);
      else onResult(decode(msg.data));
    },
  });
  await page.nc.flush(); // subscribed before the first result can be published
  const node = new AudioWorkletNode(ctx, "capture", { processorOptions: { block: Math.round(rate / 10) } });
  const mute = ctx.createGain();
  mute.gain.value = 0;
  page.session = { id, ctx, media, node, rate, sub, samples: 0, sent: [] };
  publish({
    type: "start",
    session_id: id,
    sample_rate: rate,
    channels: 1,
    state: $("agent").checked ? "responding" : "listening",
    eager_eot_threshold: 0.5, // show the eager end of turn an agent would start its reply on
  });
  node.port.onmessage = (e) => {
    const s = page.session;
    if (!s || s.id !== id) return;
    const { pcm, level } = e.data;
    publish({ type: "chunk", audio: new Uint8Array(pcm.buffer), timestamp: Date.now() / 1000 });
    s.samples += pcm.length;
    s.sent.push([s.samples, performance.now()]);
    $("level").style.width = `${Math.min(100, Math.sqrt(level) * 250)}%`;
  };
  source.connect(node);
  node.connect(mute).connect(ctx.destination);
  $("session").textContent = `session ${id}, ${rate} Hz`;
  $("mic").textContent = "Stop";
  $("mic").classList.add("on");
  $("mic").disabled = false;
  log("start", `session ${id} started at ${rate} Hz`);
}

async function stop() {
  const s = page.session;
  if (!s) return;
  publish({ type: "end" }); // the service publishes the last final, then closes the session
  log("end", `session ${s.id} ended`);
  page.session = null;
  s.node.port.onmessage = null;
  s.media.getTracks().forEach((t) => t.stop());
  await s.ctx.close();
  $("level").style.width = "0";
  $("mic").textContent = "Start talking";
  $("mic").classList.remove("on");
  // the last final comes after the end: keep listening to the session a while
  setTimeout(() => s.sub.unsubscribe(), 30000);
}

// --- start-up -----------------------------------------------------------------------------------
async function main() {
  try {
    page.config = await (await fetch("config.json", { cache: "no-store" })).json();
  } catch (err) {
    setStatus("the page's server is not answering", "failed");
    showError("cannot read config.json from the server that served this page; is it still running?");
    return;
  }
  const url = params.get("nats") || page.config.nats_ws;
  const backend = page.config.backend ? ` · backend ${page.config.backend}` : "";
  $("where").textContent = `NATS ${url} · audio to ${page.config.input_subject}.{session}${backend}`;
  try {
    page.nc = await connect({ servers: url, name: "stt-service web page", maxReconnectAttempts: -1 });
  } catch (err) {
    setStatus(`cannot reach NATS at ${url}`, "failed");
    showError(
      `Cannot reach NATS at ${url} (${err.message || err.code || err}). Is stt-service demo --web ` +
        "still running? A deployment's NATS server needs a websocket listener (see the README).",
    );
    return;
  }
  setStatus(`connected to NATS at ${url}`, "connected");
  $("mic").disabled = false;
  $("mic").addEventListener("click", () => (page.session ? stop() : start()));
  $("agent").addEventListener("change", () => {
    const state = $("agent").checked ? "responding" : "listening";
    if (!page.session) return; // sent in the next session's start
    publish({ type: "state_change", state });
    log("state_change", `state ${state}`);
  });
  (async () => {
    for await (const s of page.nc.status()) {
      if (s.type === "disconnect") setStatus(`NATS connection lost (${url}); reconnecting…`, "failed");
      if (s.type === "reconnect") setStatus(`connected to NATS at ${url}`, "connected");
    }
  })();
}

main();
