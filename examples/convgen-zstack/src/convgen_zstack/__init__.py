"""convgen-zstack: microscopy z-stacks (OME-TIFF) for convgen.

The hooks are in ``convgen_zstack.plugin``.
"""
