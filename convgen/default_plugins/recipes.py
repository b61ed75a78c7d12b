"""Built-in recipes: ``embed`` and ``inspect``."""

import convgen


@convgen.hookimpl
def register_recipes(register):
    from convgen.metric import embed
    from convgen.nets import inspect

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
