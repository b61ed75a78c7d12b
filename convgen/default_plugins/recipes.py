"""Built-in recipes: ``train``, ``evaluate``, ``embed``, ``inspect``, ``stylize`` and ``visualize``; the baselines ``evaluate`` scores (``samples``, ``untrained``)."""

import convgen


@convgen.hookimpl
def register_recipes(register):
    # "module:attribute" references: `convgen recipes list` imports none of these modules
    register(
        "train",
        "convgen.metric.train:run",
        defaults="convgen.metric.train:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder", "loss": "loss"},
        description="Learn a similarity function (triplet, contrastive or pair loss) on identity-disjoint splits.",
    )
    register(
        "evaluate",
        "convgen.metric.evaluate:run",
        defaults="convgen.metric.evaluate:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder", "pipeline": "pipeline"},
        description="Verification ROC/EER/TAR@FAR, one-shot and open-set identification, N-way k-shot episodes.",
    )
    register(
        "embed",
        "convgen.metric.embed:run",
        defaults="convgen.metric.embed:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder", "pipeline": "pipeline"},
        description="Encode a dataset into embeddings and measure how well identities separate.",
    )
    register(
        "inspect",
        "convgen.nets.inspect:run",
        defaults="convgen.nets.inspect:DEFAULTS",
        components={"encoder": "encoder"},
        description="List an encoder's layers with output shapes and receptive fields.",
    )
    register(
        "stylize",
        "convgen.style.stylize:run",
        defaults="convgen.style.stylize:DEFAULTS",
        components={"encoder": "encoder", "style_cost": "style_cost"},
        description="Gram-matrix style transfer between two samples (or texture synthesis), in 1D, 2D or 3D.",
    )
    register(
        "visualize",
        "convgen.visualize.recipe:run",
        defaults="convgen.visualize.recipe:DEFAULTS",
        components={"dataset": "dataset", "encoder": "encoder"},
        description="What each layer learns: the top-k input patches of chosen units, as figure grids.",
    )


@convgen.hookimpl
def register_baselines(register):
    register("samples", "convgen.metric.evaluate:samples_baseline")
    register("untrained", "convgen.metric.evaluate:untrained_baseline")
