"""Hands-free conversation: the microphone streams, the VAD ends the user's turn and lets them interrupt the avatar,
and the reply goes back over WebRTC (aiortc) as it is made. Layered above avatar.system, below app.py."""
