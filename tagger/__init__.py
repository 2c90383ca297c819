"""tagger: batch auto-tagging of fashion catalogue images (gender + product type).

How the package fits together (layers, the data model, the task contract, failure
semantics) is described in docs/architecture.md.
"""

__version__ = "0.1.0"
