"""Similarity learning: the Siamese embedder, triplet/contrastive/pair-classifier losses with
online miners, P×K sampling, the training loop (`engine`) and training from a config
(`training`), evaluation metrics (`evaluation`: ROC, EER, rank-k, open set) and the reports
built from them (`reports`); the recipes that drive them live in `convgen.recipes`."""
