"""Model definition, synthetic catalogues and training for tagger."""
