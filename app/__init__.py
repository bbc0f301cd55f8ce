"""toolrelay: an OpenAI-compatible Chat Completions server with an agent mode."""

__version__ = "0.1.0"
