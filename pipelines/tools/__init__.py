"""Tools around runs: child-run processes (sweeps, tuning), tracking and plots."""
