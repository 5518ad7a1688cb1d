"""Replay: where collected steps wait to be sampled (in-process buffers and datasets, Reverb)."""
