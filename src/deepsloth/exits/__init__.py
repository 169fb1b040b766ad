"""Early exit: per-exit cost, exit policies, threshold calibration, early-exit runtime."""
