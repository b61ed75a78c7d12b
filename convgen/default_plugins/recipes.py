"""Built-in recipes: ``train``, ``evaluate``, ``embed`` and ``inspect``."""

import convgen


@convgen.hookimpl
def register_recipes(register):
    from convgen.metric import embed, evaluate, train
    from convgen.nets import inspect

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
