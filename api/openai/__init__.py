"""The OpenAI protocol in one place: request parsing, response and chunk shapes, the OpenAPI schema.

A protocol the platform speaks is a package beside this one; each turns its bodies into the
platform's GenerationRequest and serving's chunks back into its own shapes.
"""
