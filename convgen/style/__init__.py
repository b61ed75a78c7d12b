"""Gram-matrix neural style transfer for any number of spatial axes."""
