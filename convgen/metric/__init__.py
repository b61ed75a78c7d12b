"""Similarity learning: the Siamese embedder, triplet/contrastive/pair-classifier losses with
online miners, P×K sampling, the training loop (`engine`), evaluation (ROC, EER, rank-k, open set),
and the train, evaluate and embed recipes."""
