"""Similarity learning: embeddings, and (to come) losses, miners and evaluation."""
