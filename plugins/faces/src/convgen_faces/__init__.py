"""convgen-faces: the 2D face plugin (readers, detection, datasets, recipes, dlib's encoder)."""
