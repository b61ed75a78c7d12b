"""Built-in recipes: ``train``, ``evaluate``, ``embed``, ``inspect``, ``stylize`` and ``visualize``; the baselines ``evaluate`` scores (``samples``, ``untrained``)."""

import convgen


@convgen.hookimpl
def register_recipes(register):
    # "module:attribute" references: `convgen recipes list` imports none of these modules
    register(
        "train",
        "convgen.recipes.train:run",
        defaults="convgen.recipes.train:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder", "loss": "loss"},
        description="Learn a similarity function (triplet, contrastive or pair loss) on identity-disjoint splits.",
    )
    register(
        "evaluate",
        "convgen.recipes.evaluate:run",
        defaults="convgen.recipes.evaluate:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder", "pipeline": "pipeline"},
        description="Verification ROC/EER/TAR@FAR, one-shot and open-set identification, N-way k-shot episodes.",
    )
    register(
        "embed",
        "convgen.recipes.embed:run",
        defaults="convgen.recipes.embed:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder", "pipeline": "pipeline"},
        description="Encode a dataset into embeddings and measure how well identities separate.",
    )
    register(
        "inspect",
        "convgen.recipes.inspect:run",
        defaults="convgen.recipes.inspect:DEFAULTS",
        components={"encoder": "encoder"},
        description="List an encoder's layers with output shapes and receptive fields.",
    )
    register(
        "stylize",
        "convgen.recipes.stylize:run",
        defaults="convgen.recipes.stylize:DEFAULTS",
        components={"encoder": "encoder", "style_cost": "style_cost"},
        description="Gram-matrix style transfer between two samples (or texture synthesis), in 1D, 2D or 3D.",
    )
    register(
        "visualize",
        "convgen.recipes.visualize:run",
        defaults="convgen.recipes.visualize:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder"},
        description="What each layer learns: the top-k input patches of chosen units, as figure grids.",
    )


@convgen.hookimpl
def register_baselines(register):
    register("samples", "convgen.metric.reports:samples_baseline")
    register("untrained", "convgen.metric.reports:untrained_baseline")
