"""The core recipes, each a module with its ``DEFAULTS`` (the complete default config) and
its ``run(config, out_dir) -> RecipeResult``, and nothing else: what they do lives in the
library (`convgen.metric`, `convgen.style`, `convgen.visualize`, `convgen.nets`), where
plugins and other recipes reuse it.

- ``train`` (`convgen.recipes.train`): learn a similarity function on identity-disjoint splits;
- ``evaluate``: verification, one-shot / open-set / cross-session identification, baselines;
- ``embed``: encode a dataset and save the embeddings;
- ``inspect``: an encoder's layers, shapes and receptive fields;
- ``stylize``: Gram-matrix style transfer (or texture synthesis) in 1D, 2D or 3D;
- ``visualize``: the top-k input patches of chosen units.

They are registered by the core's own plugin (``convgen/default_plugins/recipes.py``) like
any plugin's; a plugin derives its own from them by name (``based_on="train"``), and
`convgen.running.run_recipe` runs any of them as ``convgen run`` does.
"""
