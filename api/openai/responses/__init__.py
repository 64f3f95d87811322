"""OpenAI's Responses API (`/v1/responses`): request parsing, response objects and stream events, serving."""
