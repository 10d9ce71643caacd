"""Voice: people who talk to Citadel.

One pipeline (:mod:`voice.session`: VAD → STT → the Citadel runtime → TTS, on livekit-agents)
behind two transports: a LiveKit room (:mod:`voice.worker`, ``citadel voice``) and a browser
WebSocket with no LiveKit server (:mod:`voice.browser`, served on ``GET /voice/ws``). The
runtime is reached only through the run API (:mod:`agent_server.runs.service`), so voice
turns are ordinary messages of the user's thread.
"""
