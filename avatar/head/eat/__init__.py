"""The EAT engine (emotional talking head, official checkpoints): engine.py drives it (photo prep, audio features,
the networks in batches), runtime.py loads and runs the networks of models/eat, prep.py turns speech into EAT's
inputs, deepspeech.py runs the frozen DeepSpeech graph that EAT's audio features come from."""
