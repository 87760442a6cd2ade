"""What every stage shares: the config, the hand-off types and domain errors, media I/O, text rules, devices,
timing helpers and the text emotion lexicons. Imports nothing from the stages; no heavy libraries at import time."""
