"""convgen-ct: CT and MR volumes for convgen (3D metric learning and 3D style transfer)."""
