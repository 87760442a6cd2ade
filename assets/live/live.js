// Hands-free conversation, page side (loaded by the Talk tab's conversation-mode panel, see app.py
// build_live_controls). One RTCPeerConnection: the microphone (echo-cancelled) goes up, the avatar's voice and face
// come down and play in #live-video; a data channel brings the server's events (turn heard, reply started,
// interrupted). It also measures, on this page, end of the user's speech -> first sound heard and first frame shown.
(() => {
  if (window.avatarLive) return;
  const WORKLET = `
    class Edges extends AudioWorkletProcessor {
      constructor(o) { super(); const p = o.processorOptions; this.label = p.label; this.thr = p.threshold;
        this.minQuiet = Math.round(p.minQuietS * sampleRate); this.loud = false; this.quiet = 0; this.lastLoud = 0; }
      process(inputs) {
        const x = inputs[0] && inputs[0][0];
        if (!x) return true;
        for (let i = 0; i < x.length; i++) {
          const t = currentTime + i / sampleRate;
          if (Math.abs(x[i]) > this.thr) {
            if (!this.loud) { this.loud = true; this.port.postMessage({ label: this.label, kind: 'on', t }); }
            this.quiet = 0; this.lastLoud = t;
          } else if (this.loud && ++this.quiet >= this.minQuiet) {
            this.loud = false; this.port.postMessage({ label: this.label, kind: 'off', t: this.lastLoud });
          }
        }
        return true;
      }
    }
    registerProcessor('avatar-edges', Edges);`;

  const live = (window.avatarLive = {
    id: null, pc: null, channel: null, ctx: null, video: null, edges: { mic: [], out: [] }, frames: [],
    events: [], turns: [], interruptions: [], history: [], pendingFrame: null, pendingTurn: null, pendingCut: null,
  });

  function now() { return performance.timeOrigin + performance.now(); } // ms since the epoch, sub-ms precise

  async function tap(stream, label, threshold, minQuietS) {
    const ctx = live.ctx;
    const node = new AudioWorkletNode(ctx, 'avatar-edges', { processorOptions: { label, threshold, minQuietS } });
    node.port.onmessage = (m) => {
      const ts = ctx.getOutputTimestamp(); // context time -> page time
      const t = performance.timeOrigin + ts.performanceTime + (m.data.t - ts.contextTime) * 1000;
      live.edges[label].push({ kind: m.data.kind, t });
      onEdge(label, m.data.kind, t);
    };
    const mute = ctx.createGain();
    mute.gain.value = 0;
    ctx.createMediaStreamSource(stream).connect(node).connect(mute).connect(ctx.destination);
  }

  function lastEdge(label, kind, before) {
    const found = live.edges[label].filter((e) => e.kind === kind && e.t <= before);
    return found.length ? found[found.length - 1].t : null;
  }

  function onEdge(label, kind, t) {
    if (label === 'out' && kind === 'on' && live.pendingTurn && live.pendingTurn.audio_ms == null) {
      live.pendingTurn.audio_ms = t - live.pendingTurn.speech_end;
    }
    if (label === 'out' && kind === 'off' && live.pendingCut) {
      live.pendingCut.track_silent_ms = t - live.pendingCut.speech_start;
      live.pendingCut = null;
    }
  }

  function onFrame(at, meta) {
    live.frames.push(at);
    // the first frame that arrived after the server said it sent the reply's first face (within one frame)
    const received = meta.receiveTime ? performance.timeOrigin + meta.receiveTime : at;
    if (live.pendingFrame && received >= live.pendingFrame.sent - 5) {
      live.pendingFrame.turn.frame_ms = at - live.pendingFrame.turn.speech_end;
      live.pendingFrame = null;
    }
    live.video.requestVideoFrameCallback((t, m) => onFrame(performance.timeOrigin + t, m));
  }

  function onServerEvent(ev) {
    const at = now();
    live.events.push({ ...ev, received: at });
    if (ev.kind === 'user_turn') {
      live.video.muted = false;  // the next answer is heard (the cut one's sound has long drained)
      // the user's speech ended at the last moment the microphone went quiet before the server said so
      const end = lastEdge('mic', 'off', at);
      live.pendingTurn = { speech_end: end, heard_at: at, audio_ms: null, frame_ms: null };
      live.turns.push(live.pendingTurn);
    } else if (ev.kind === 'first_frame' && live.pendingTurn) {
      live.pendingFrame = { turn: live.pendingTurn, sent: at };
    } else if (ev.kind === 'interrupt') {
      // the server has cleared its queue; what it already sent still sits in the jitter buffer: mute it now
      live.video.muted = true;
      const start = lastEdge('mic', 'on', at);
      // the sound may have stopped before this message arrived (the server cuts first, then tells)
      const before = live.edges.out.filter((e) => e.t <= start).pop();
      const off = live.edges.out.find((e) => e.kind === 'off' && e.t >= start);
      if (before && before.kind === 'off') {  // a pause between chunks: nothing was sounding to stop
        live.interruptions.push({ speech_start: start, silent_ms: 0, already_silent: true });
      } else if (off) live.interruptions.push({ speech_start: start, silent_ms: off.t - start });
      else {  // heard: silent from the mute on; the received track itself goes quiet when the buffer drains
        live.pendingCut = { speech_start: start, silent_ms: at - start, muted: true, track_silent_ms: null };
        live.interruptions.push(live.pendingCut);
      }
      if (live.pendingTurn && live.pendingTurn.audio_ms == null) live.pendingTurn.cut_before_sound = true;
    }
    const status = document.getElementById('live-status');
    if (status) status.textContent = describe(ev);
    if (ev.kind === 'played' || ev.kind === 'interrupted' || ev.kind === 'done') refreshHistory();
  }

  function describe(ev) {
    return { user_turn: '思考中 Thinking…', transcript: '你说 You said: ' + ev.text, first_audio: '回答中 Speaking…',
      interrupt: '已打断 Interrupted — listening', played: '请说 Listening…', error: ev.message }[ev.kind]
      || document.getElementById('live-status').textContent;
  }

  async function refreshHistory() {
    if (!live.id) return;
    const r = await fetch(`/live/${live.id}/state?since=${live.events.length}`);
    if (r.ok) live.history = (await r.json()).history;
  }

  function waitForIce(pc) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 2000);
    });
  }

  live.start = async () => {
    if (live.id) return live.id;
    const mic = await live.microphone();
    live.ctx = new AudioContext({ latencyHint: 'interactive' });
    await live.ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], { type: 'text/javascript' })));
    const pc = (live.pc = new RTCPeerConnection({ iceServers: [] }));
    live.sender = pc.addTrack(mic.getAudioTracks()[0], mic);
    await live.useMicrophone(mic);
    pc.addTransceiver('video', { direction: 'recvonly' });
    live.channel = pc.createDataChannel('events');
    live.channel.onmessage = (m) => onServerEvent(JSON.parse(m.data));
    const remote = new MediaStream();
    live.video = document.getElementById('live-video');
    live.video.srcObject = remote;
    live.video.style.display = '';
    document.getElementById('live-status').textContent = '请说 Listening…';
    pc.ontrack = (e) => {
      try { e.receiver.jitterBufferTarget = 0; } catch (err) { /* older browsers: the default buffer */ }
      remote.addTrack(e.track);
      if (e.track.kind === 'audio') tap(new MediaStream([e.track]), 'out', 0.01, 0.03);
      live.video.play().catch(() => {});
    };
    live.video.requestVideoFrameCallback((t, m) => onFrame(performance.timeOrigin + t, m));
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc); // aiortc takes no trickled candidates: the offer carries them all
    const r = await fetch('/live/offer', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }) });
    if (!r.ok) throw new Error('the server refused the conversation: ' + (await r.text()));
    const answer = await r.json();
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    live.id = answer.id;
    return live.id;
  };

  // the browser's echo canceller keeps most of the avatar's own voice out of the microphone
  live.microphone = () => navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false }, video: false });

  // another microphone (a device change; the browser test's fresh captures) without a new connection
  live.useMicrophone = async (stream) => {
    if (live.mic && live.mic !== stream) live.mic.getTracks().forEach((t) => t.stop());
    live.mic = stream;
    await live.sender.replaceTrack(stream.getAudioTracks()[0]);
    await tap(stream, 'mic', 0.01, 0.3);
  };

  live.stop = async () => {
    const id = live.id;
    live.id = null;
    if (live.pc) live.pc.close();
    if (live.mic) live.mic.getTracks().forEach((t) => t.stop());
    if (live.ctx) live.ctx.close();
    if (live.video) live.video.style.display = 'none';
    document.getElementById('live-status').textContent = '';
    if (id) await fetch(`/live/${id}/close`, { method: 'POST' });
    return '';
  };
})();
