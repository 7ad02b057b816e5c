"""The engine: the only layer that imports Lightning. Training loop, run directories, checkpoints, bench."""
