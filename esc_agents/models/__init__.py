"""Talking to models: the OpenAI-compatible endpoint, composed of layers (transport with retries,
sampling, the completion cache) and metering observers; the embedded local server. Knows nothing
of roles or dialogues."""
