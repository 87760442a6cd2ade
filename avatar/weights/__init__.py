"""The original design's weights: models.toml lists every file with its sources, sizes, hashes and licence
(manifest.py reads it), download.py fetches and verifies them, doctor.py tells which backend each stage will run
and which files are missing. Tooling above the stages: nothing here runs a model."""
