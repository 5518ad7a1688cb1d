"""Environments: gymnasium (and ale-py's Atari) games as batched TF-Agents environments."""
