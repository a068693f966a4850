"""Training stages of RLFF-ESC: future-oriented reward data, the reward model, GRPO."""
