"""Built-in recipes: ``train``, ``evaluate``, ``embed``, ``inspect``, ``stylize`` and ``visualize``."""

import convgen


@convgen.hookimpl
def register_recipes(register):
    from convgen.metric import embed, evaluate, train
    from convgen.nets import inspect
    from convgen.style import stylize
    from convgen.visualize import recipe as visualize

    register(
        "train",
        train.run,
        defaults=train.DEFAULTS,
        components={"dataset": "dataset", "encoder": "encoder", "loss": "loss"},
        description="Learn a similarity function (triplet, contrastive or pair loss) on identity-disjoint splits.",
    )
    register(
        "evaluate",
        evaluate.run,
        defaults=evaluate.DEFAULTS,
        components={"dataset": "dataset", "encoder": "encoder"},
        description="Verification ROC/EER/TAR@FAR, one-shot and open-set identification, N-way k-shot episodes.",
    )
    register(
        "embed",
        embed.run,
        defaults=embed.DEFAULTS,
        components={"dataset": "dataset", "encoder": "encoder"},
        description="Encode a dataset into embeddings and measure how well identities separate.",
    )
    register(
        "inspect",
        inspect.run,
        defaults=inspect.DEFAULTS,
        components={"encoder": "encoder"},
        description="List an encoder's layers with output shapes and receptive fields.",
    )
    register(
        "stylize",
        stylize.run,
        defaults=stylize.DEFAULTS,
        components={"encoder": "encoder", "style_cost": "style_cost"},
        description="Gram-matrix style transfer between two samples (or texture synthesis), in 1D, 2D or 3D.",
    )
    register(
        "visualize",
        visualize.run,
        defaults=visualize.DEFAULTS,
        components={"dataset": "dataset", "encoder": "encoder"},
        description="What each layer learns: the top-k input patches of chosen units, as figure grids.",
    )
