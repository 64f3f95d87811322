"""Anthropic's Messages API in one place: request parsing, message and stream-event shapes, errors, the OpenAPI schema.

Beside api/openai: bodies are parsed into the same GenerationRequest (messages in OpenAI's chat
shape), and serving's chunks come back as Anthropic's message object or stream events.
"""
