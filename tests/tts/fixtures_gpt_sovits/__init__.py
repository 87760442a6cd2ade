"""A stand-in GPT-SoVITS checkout for the tests: same import path and entry points, no model.

GPT_SoVITS/TTS_infer_pack/TTS.py has TTS(TTS_Config(path)).run(inputs) -> (sample_rate, int16 audio) like the real
pipeline, and api_v2.py serves the documented /tts contract over HTTP. The real GPT-SoVITS cannot run here (its
weights and text frontend models are downloads, and its pins clash with ours), so its audio is a tone whose pitch and
length follow the text: tests can predict it exactly.
"""
