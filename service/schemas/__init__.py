"""The API's response bodies, as they appear in the OpenAPI document: one module per resource, as in
`crud/` and `routes/`, and `common` for what they all share. Timestamps are unix seconds, as in
OpenAI's API; request bodies are tuning.spec's models (and multipart form fields for files).
"""
