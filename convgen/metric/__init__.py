"""Similarity learning: the Siamese embedder, triplet/contrastive/pair-classifier losses with
online miners, P×K sampling, the training loop's recipes, and evaluation (ROC, EER, rank-k, open set)."""
