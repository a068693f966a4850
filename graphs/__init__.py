"""LangGraph rollouts: the episode graph shared by evaluation episodes and simulated futures."""
