"""The roles of a dialogue: the LLM supporter, user simulator, critic and judge, their reply
cleaning, Python roles and the plugin registry, and the known-answer environment."""
