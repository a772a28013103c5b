// The playback page: loads the recording's .cast once (as far as it is stored) and plays it in
// the asciinema player, with speed and idle-time-limit choices and its markers as chapters.
// Changing a choice mounts the player again at the same position, since the player takes them
// only when it is created. window.wrennPlayback is for tests and the browser's console.
"use strict";

(() => {
  const section = document.getElementById("recording");
  const root = document.getElementById("player");
  const stateEl = document.getElementById("player-state");
  const speedEl = document.getElementById("speed");
  const idleEl = document.getElementById("idle");
  const reloadEl = document.getElementById("reload");
  const chaptersEl = document.getElementById("chapters");
  const chapterList = document.getElementById("chapter-list");
  const params = new URLSearchParams(window.location.search);

  const state = { cast: "", player: null, playing: false, markers: [] };

  function setState(name, text) {
    stateEl.dataset.state = name;
    stateEl.textContent = text;
  }

  function choose(select, value) {
    if (value !== null && [...select.options].some((option) => option.value === value)) {
      select.value = value;
    }
  }

  // The `m` events of an asciicast v2 file (one JSON array a line after the header line).
  function markersOf(text) {
    const found = [];
    const lines = text.split("\n");
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      if (!line.includes('"m"')) continue;
      let event;
      try {
        event = JSON.parse(line);
      } catch {
        continue;
      }
      if (Array.isArray(event) && event[1] === "m") {
        found.push({ time: Number(event[0]), label: String(event[2] ?? "") });
      }
    }
    return found;
  }

  function showChapters() {
    chapterList.replaceChildren(
      ...state.markers.map((marker, index) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "chapter";
        button.dataset.index = String(index);
        button.textContent = `${marker.time.toFixed(1)} s  ${marker.label || "(marker)"}`;
        button.addEventListener("click", () => state.player.seek({ marker: index }));
        item.append(button);
        return item;
      }),
    );
    chaptersEl.hidden = state.markers.length === 0;
  }

  function mount(at, play) {
    if (state.player !== null) state.player.dispose();
    root.replaceChildren();
    // No cols or rows: the player would keep them over the recording's own and its resizes.
    const options = {
      speed: Number(speedEl.value) || 1,
      fit: "width",
      controls: true,
      preload: true,
      autoPlay: false,
    };
    if (idleEl.value) options.idleTimeLimit = Number(idleEl.value);
    const player = AsciinemaPlayer.create({ data: state.cast }, root, options);
    player.addEventListener("play", () => { state.playing = true; });
    player.addEventListener("playing", () => { state.playing = true; });
    player.addEventListener("pause", () => { state.playing = false; });
    player.addEventListener("ended", () => { state.playing = false; });
    state.player = player;
    state.playing = false;
    // A seek, not the startAt option: a paused player shows the frame at a seek position, and
    // only a poster at startAt.
    const placed = at > 0 ? player.seek(at) : Promise.resolve();
    return placed.then(() => (play ? player.play() : undefined));
  }

  function position() {
    return state.player === null ? 0 : state.player.getCurrentTime() || 0;
  }

  async function remount(at, play, done) {
    setState("loading", "loading…");
    await mount(at, play);
    setState("ready", done);
  }

  function remember() {
    const url = new URL(window.location.href);
    url.searchParams.set("speed", speedEl.value);
    if (idleEl.value) url.searchParams.set("idle", idleEl.value);
    else url.searchParams.delete("idle");
    window.history.replaceState(null, "", url);
  }

  async function load() {
    setState("loading", "loading…");
    let response;
    try {
      response = await fetch(section.dataset.castUrl, { credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      setState("error", `could not load the recording: ${error}`);
      return false;
    }
    if (!response.ok) {
      setState("error", `could not load the recording: ${response.status} ${(await response.text()).trim()}`);
      return false;
    }
    const text = await response.text();
    if (!text.trim()) {
      setState("empty", "nothing recorded yet");
      return false;
    }
    state.cast = text;
    state.markers = markersOf(text);
    showChapters();
    return true;
  }

  choose(speedEl, params.get("speed"));
  choose(idleEl, params.get("idle"));
  const startAt = Number(params.get("t"));

  for (const select of [speedEl, idleEl]) {
    select.addEventListener("change", () => {
      remember();
      if (state.cast) remount(position(), state.playing, "ready");
    });
  }
  if (reloadEl !== null) {
    reloadEl.addEventListener("click", async () => {
      const [at, play] = [position(), state.playing];
      if (await load()) await remount(at, play, "ready: loaded what is new");
    });
  }

  const ready = load().then(async (loaded) => {
    if (!loaded) return false;
    await remount(Number.isFinite(startAt) && startAt > 0 ? startAt : 0, false, "ready: press play, or pick a chapter");
    return true;
  });

  window.wrennPlayback = {
    ready,
    player: () => state.player,
    markers: () => state.markers,
  };
})();
