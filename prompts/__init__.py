"""Prompt templates (UTF-8 text files), shipped in the wheel as the package ``rag_app.prompts``."""
