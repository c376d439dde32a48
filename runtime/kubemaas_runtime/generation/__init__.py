"""Text generation: onnxruntime-genai model folders as bundles, and the OpenAI-compatible server.

Modules: ``folder`` (manifest for a genai folder), ``builder`` (the model builder, training image
only), ``tokenizer``, ``engine`` (ONNX Runtime decoder over a slot KV cache), ``sampling``,
``scheduler`` (continuous batching), ``openai_api`` / ``v2`` (routes), ``app`` (the factory).
Nothing is imported or loaded at import time.
"""
