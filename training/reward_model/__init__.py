"""Stage 2: the reward model trained on D_r (data loading, training, metrics, scoring)."""
