"""What each layer learns: the input patches that most activate chosen units (Zeiler & Fergus), in 1D, 2D and 3D."""
