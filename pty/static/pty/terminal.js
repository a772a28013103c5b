// Capsule terminal page: xterm.js wired to the capsule's PTY WebSocket (the JSON dialect, see docs/protocol-json.md).
// Output is written to xterm as bytes so that a UTF-8 character split across frames stays whole.
// ?tag=<tag> opens that session, &mode=observer watches it, ?new=1 starts a new one; a share
// link's page watches its one session, authenticated by the link's token in an auth frame.
// The status bar lists the session's viewers (the `viewers` extension frame); a peer can hand
// control to an observer or revoke the share link an observer came in on.
(function () {
  "use strict";

  const RECONNECT_FIRST_MS = 500;
  const RECONNECT_MAX_MS = 5000;
  const RESIZE_DEBOUNCE_MS = 100;
  // Keystrokes typed while the socket is down are sent once it is back, up to this many bytes.
  const PENDING_INPUT_LIMIT = 64 * 1024;

  const root = document.getElementById("terminal");
  const statusEl = document.getElementById("status");
  const noticeEl = document.getElementById("notice");
  const modeEl = document.getElementById("mode");
  const viewersEl = document.getElementById("viewers");
  const capsuleId = root.dataset.capsuleId;
  const wsPath = root.dataset.wsPath;
  const tagKey = "wrenn.pty.tag." + capsuleId;
  const shareToken = root.dataset.shareToken || "";
  const viaAdmin = root.dataset.admin === "1";
  // The session this page was opened on (?tag=, or a share link's); none: the tab's last, or a new one.
  let explicitTag = root.dataset.tag || "";
  let startNew = root.dataset.new === "1" && !explicitTag;
  // The mode this page asks for when it connects (null: the server's default for this caller),
  // and the one the server says this viewer has.
  let wantMode = root.dataset.mode === "observer" || shareToken ? "observer" : null;
  let mode = wantMode || (viaAdmin && explicitTag ? "observer" : "peer");
  let viewerId = null;
  let viewers = [];

  const term = new window.Terminal({
    cursorBlink: true,
    scrollback: 10000,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    theme: { background: "#101418" },
  });
  const fitAddon = new window.FitAddon.FitAddon();
  term.loadAddon(fitAddon);
  term.open(root);
  fitAddon.fit();
  term.focus();

  const encoder = new TextEncoder();

  let socket = null;
  let state = "connecting";
  let attempt = 0; // reconnect attempts since the last good connection
  let reconnectTimer = null;
  let firstFrame = null; // "start" or "connect": what the current socket opened with
  let sessionOver = false; // after exit or a fatal error: no automatic reconnect
  // Offset of the next output byte this page has not written yet, or null when the screen is
  // blank (a fresh page): a reconnect resumes exactly there, a fresh page asks for a replay.
  let nextOffset = null;
  let sentSize = null; // {cols, rows} the server last heard from this socket
  let pending = []; // Uint8Array chunks typed while not connected
  let pendingBytes = 0;

  // --- small helpers ---------------------------------------------------------

  function sessionTag() {
    if (explicitTag) return explicitTag;
    if (startNew) return null;
    return storedTag();
  }

  function storedTag() {
    try {
      return window.localStorage.getItem(tagKey);
    } catch (e) {
      return null;
    }
  }

  function storeTag(tag) {
    if (shareToken) return; // a share link's page keeps nothing in the browser
    try {
      if (tag) window.localStorage.setItem(tagKey, tag);
      else window.localStorage.removeItem(tagKey);
    } catch (e) {
      // Storage may be disabled; the page still works, it just cannot resume in a new tab.
    }
  }

  function bytesToBase64(bytes) {
    if (typeof bytes.toBase64 === "function") return bytes.toBase64();
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return window.btoa(binary);
  }

  function base64ToBytes(text) {
    if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
    const binary = window.atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function setState(next, label) {
    state = next;
    statusEl.dataset.state = next;
    statusEl.textContent = label || next;
  }

  function notice(text) {
    noticeEl.textContent = text || "";
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function isLive() {
    return state === "connected" && socket && socket.readyState === WebSocket.OPEN;
  }

  // --- input ------------------------------------------------------------------

  function sendBytes(bytes) {
    if (bytes.length === 0) return;
    if (isLive()) {
      send({ type: "input", data: bytesToBase64(bytes) });
      return;
    }
    if (pendingBytes + bytes.length > PENDING_INPUT_LIMIT) {
      notice("not connected: input beyond 64 KiB was discarded");
      return;
    }
    pending.push(bytes);
    pendingBytes += bytes.length;
  }

  function flushPending() {
    const chunks = pending;
    pending = [];
    pendingBytes = 0;
    for (const chunk of chunks) send({ type: "input", data: bytesToBase64(chunk) });
  }

  function onTyped(bytes, text) {
    if (state === "exited" || state === "error") {
      // The session is over; Enter starts (or retries) one, other keys are ignored. An
      // observer (a share link's page among them) starts nothing.
      if (text.indexOf("\r") !== -1 && mode !== "observer") restart();
      return;
    }
    if (mode === "observer") {
      notice("watching: this page is an observer and cannot type");
      return;
    }
    sendBytes(bytes);
  }

  term.onData(function (text) {
    onTyped(encoder.encode(text), text);
  });

  // onBinary carries raw bytes as a string of code points 0-255 (some mouse reports).
  term.onBinary(function (text) {
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
    onTyped(bytes, text);
  });

  // --- size ---------------------------------------------------------------------

  function sendSize() {
    // An observer never changes the terminal's size.
    if (!isLive() || mode === "observer") return;
    if (sentSize && sentSize.cols === term.cols && sentSize.rows === term.rows) return;
    sentSize = { cols: term.cols, rows: term.rows };
    send({ type: "resize", cols: term.cols, rows: term.rows });
  }

  term.onResize(sendSize);

  let resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () {
      fitAddon.fit();
      sendSize();
    }, RESIZE_DEBOUNCE_MS);
  });

  // Glyph metrics change once the web font is ready; refit so the grid fills the window.
  if (document.fonts && document.fonts.ready) {
    document.fonts.ready.then(function () {
      fitAddon.fit();
      sendSize();
    });
  }

  // --- connection ----------------------------------------------------------------

  function wsUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + wsPath;
  }

  function becomeConnected() {
    attempt = 0;
    notice("");
    setState("connected");
    sendSize();
    flushPending();
  }

  function open() {
    window.clearTimeout(reconnectTimer);
    reconnectTimer = null;
    sessionOver = false;
    fitAddon.fit();
    // The JSON dialect with this project's extensions (offsets, missed): stated, so never waited for.
    const ws = new WebSocket(wsUrl(), ["wrenn.json.v1"]);
    socket = ws;

    ws.onopen = function () {
      if (ws !== socket) return;
      if (shareToken) send({ type: "auth", token: shareToken });
      const tag = sessionTag();
      if (tag) {
        firstFrame = "connect";
        // The session may have been sized by another window: always send ours after connecting.
        sentSize = null;
        const connect = { type: "connect", tag: tag };
        if (nextOffset !== null) connect.offset = nextOffset;
        // A reconnect keeps the mode this viewer had; the first connect asks for the page's.
        const asked = viewerId !== null ? mode : wantMode;
        if (asked) connect.mode = asked;
        viewerId = null;
        send(connect);
        // The reference sends nothing back on a successful connect, so the open socket is the
        // success signal; a missing session answers with a fatal error, handled below.
        becomeConnected();
      } else {
        firstFrame = "start";
        nextOffset = 0;
        sentSize = { cols: term.cols, rows: term.rows };
        send({ type: "start", cols: term.cols, rows: term.rows });
      }
    };

    ws.onmessage = function (event) {
      if (ws !== socket) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (e) {
        notice("ignored a malformed frame from the server");
        return;
      }
      handle(msg);
    };

    ws.onclose = function () {
      if (ws !== socket) return;
      socket = null;
      if (sessionOver) return;
      scheduleReconnect();
    };
  }

  function handle(msg) {
    switch (msg.type) {
      case "started":
        storeTag(msg.tag);
        if (startNew) {
          // Reloading this page reconnects to the session it started, not to a new one.
          startNew = false;
          explicitTag = msg.tag;
          window.history.replaceState(null, "", "?tag=" + encodeURIComponent(msg.tag));
        }
        becomeConnected();
        break;
      case "viewers":
        onViewers(msg);
        break;
      case "output": {
        const bytes = base64ToBytes(msg.data || "");
        if (typeof msg.offset === "number") nextOffset = msg.offset + bytes.length;
        term.write(bytes);
        break;
      }
      case "missed":
        // The server no longer holds these bytes; say so on screen rather than pretend.
        nextOffset = msg.offset;
        term.write("\r\n\x1b[2m[" + msg.bytes + " bytes of output missed]\x1b[0m\r\n");
        break;
      case "ping":
        send({ type: "pong" });
        break;
      case "exit":
        onExit(msg.exit_code);
        break;
      case "error":
        onError(msg);
        break;
      default:
        // Unknown types are additive protocol extensions this page does not use.
        break;
    }
  }

  function onExit(code) {
    sessionOver = true;
    nextOffset = null;
    if (!explicitTag || explicitTag === storedTag()) storeTag(null);
    if (mode === "observer") {
      const shown = code === undefined || code === null ? "?" : String(code);
      setState("exited", "exited (code " + shown + ")");
      term.write("\r\n\x1b[2m[the session ended with code " + shown + "]\x1b[0m\r\n");
      closeSocket();
      return;
    }
    explicitTag = ""; // Enter starts a new shell, not the one that ended
    const shown = code === undefined || code === null ? "?" : String(code);
    setState("exited", "exited (code " + shown + ")");
    term.write("\r\n\x1b[2m[process exited with code " + shown + "; press Enter to start a new shell]\x1b[0m\r\n");
    closeSocket();
  }

  function onError(msg) {
    const text = String(msg.data || "error");
    if (!msg.fatal) {
      notice(text);
      return;
    }
    if (
      firstFrame === "connect" &&
      !explicitTag &&
      /not found/i.test(text) &&
      !/^(sandbox|capsule) not found/i.test(text)
    ) {
      // The remembered session is gone (its shell ended or the host forgot it): start afresh.
      storeTag(null);
      closeSocket();
      open();
      return;
    }
    sessionOver = true;
    setState("error", "error: " + text);
    term.write("\r\n\x1b[31m[" + text + "; press Enter to try again]\x1b[0m\r\n");
    closeSocket();
  }

  function closeSocket() {
    const ws = socket;
    socket = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
  }

  function scheduleReconnect() {
    attempt += 1;
    const delay = Math.min(RECONNECT_FIRST_MS * Math.pow(2, attempt - 1), RECONNECT_MAX_MS);
    setState("reconnecting", "reconnecting (attempt " + attempt + ")");
    reconnectTimer = window.setTimeout(open, delay);
  }

  // --- viewers and modes ---------------------------------------------------------------

  function onViewers(msg) {
    viewerId = msg.you || viewerId;
    viewers = Array.isArray(msg.viewers) ? msg.viewers : [];
    const me = viewers.find(function (v) {
      return v.id === viewerId;
    });
    if (me && me.mode !== mode) {
      mode = me.mode;
      if (mode === "peer") {
        notice("you have control: you can type");
        sentSize = null;
        sendSize();
      } else {
        notice("you are watching: read-only");
      }
    }
    renderViewers(me);
  }

  function button(text, className, onClick) {
    const el = document.createElement("button");
    el.type = "button";
    el.className = className;
    el.textContent = text;
    el.addEventListener("click", onClick);
    return el;
  }

  function showMode() {
    modeEl.dataset.mode = mode;
    modeEl.textContent = mode === "observer" ? "observer (read-only)" : "peer";
  }

  function renderViewers(me) {
    showMode();
    viewersEl.textContent = "";
    const count = document.createElement("span");
    count.className = "viewers-count";
    count.textContent = viewers.length + " watching:";
    viewersEl.appendChild(count);
    for (const v of viewers) {
      const item = document.createElement("span");
      item.className = "viewer";
      item.dataset.viewer = v.id;
      item.dataset.mode = v.mode;
      item.textContent = v.label + " (" + v.mode + (v.id === viewerId ? ", you" : "") + ")";
      item.title = "since " + v.since;
      if (v.id === viewerId) {
        if (v.mode === "observer" && v.may_control) {
          item.appendChild(
            button("take control", "take-control", function () {
              send({ type: "control", mode: "peer" });
            })
          );
        }
      } else if (me && me.mode === "peer" && v.mode === "observer") {
        if (v.may_control) {
          item.appendChild(
            button("hand control", "hand-control", function () {
              send({ type: "control", viewer: v.id, mode: "peer" });
            })
          );
        }
        if (v.link) {
          item.appendChild(
            button("revoke link", "revoke-link", function () {
              send({ type: "revoke", viewer: v.id });
            })
          );
        }
      }
      viewersEl.appendChild(item);
    }
  }

  function restart() {
    attempt = 0;
    notice("");
    setState("connecting");
    open();
  }

  window.wrennTerminal = {
    term: term,
    state: function () {
      return state;
    },
    tag: function () {
      return sessionTag();
    },
    mode: function () {
      return mode;
    },
    viewerId: function () {
      return viewerId;
    },
    viewers: function () {
      return viewers;
    },
    nextOffset: function () {
      return nextOffset;
    },
  };

  setState("connecting");
  showMode();
  open();
})();
