"""Scale-out: the heavy stages as Ray Serve deployments that any number of sessions share.

In `[cluster] mode = "ray"` the talking head with matting and enhancement (render workers, one per GPU share) and
ASR + TTS (speech workers) run as Ray Serve deployments; render workers batch the frames of every session they
serve through one network call. AvatarSystem keeps its methods: only the stage objects behind them are remote
handles (serve.py). worker.py holds the workers' plain code, jobs.py what travels. Ray is imported only here, in ray
mode; the default "local" mode runs every stage in the app's process, as before.
"""
