"""tagger: batch auto-tagging of fashion catalogue images (gender + product type)."""

__version__ = "0.1.0"
