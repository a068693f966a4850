"""Talking to models: the OpenAI-compatible endpoint (transport, retries, sampling, metering),
the completion cache, and the embedded local server. Knows nothing of roles or dialogues."""
