"""Storage: the run folder's names and files, checkpoints and policy exports."""
