"""Stage 3: GRPO + LoRA on the policy, rewarded by the reward model, simulated futures or both;
the format warm-up, and export of the trained policy as a servable model."""
