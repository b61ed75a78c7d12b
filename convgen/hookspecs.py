"""The whole plugin API of convgen, in one file.

A plugin is a module with functions decorated by `convgen.hookimpl` whose names
are the hooks below. Every registration hook receives a ``register`` callback: the plugin
calls it once per component and never touches a global. The core's own components are
registered through these same hooks (``convgen/default_plugins/``), and so are the
first-party plugins under ``plugins/``.

A minimal plugin is one function plus a two-line table in its ``pyproject.toml``:

```python
# my_plugin.py
import convgen

@convgen.hookimpl
def register_encoders(register):
    register("tiny", TinyEncoder)
```

```toml
# pyproject.toml
[project.entry-points.convgen]
my-plugin = "my_plugin"
```

Names are global across plugins: registering a name twice is an error that names both
plugins. Hooks are called lazily, the first time a component of their kind is needed.

Any component may be registered as a reference, ``register("tiny", "my_plugin.nets:TinyEncoder")``
(``"module:attribute"``, as in an entry point): the module is imported the first time the
component is used, so that listing components (``convgen plugins``, ``convgen recipes
list``) and starting ``convgen`` import nothing heavy. Keep the plugin module itself light.
"""

import pluggy

hookspec = pluggy.HookspecMarker("convgen")


# ---------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------


@hookspec
def register_encoders(register):
    """Register encoders: networks that map ``(N, C, *spatial)`` to embeddings.

    Call ``register(name, factory)``. ``factory(spatial_dims, in_channels, **kwargs)``
    returns a `convgen.nets.TappedEncoder`, so that its named feature taps and
    receptive fields work for style costs and visualisation. ``spatial_dims`` (1, 2 or
    3) is always the first argument; every keyword argument must have a default, and
    is what a recipe may set under ``encoder:``.

    Example:
        ```python
        @convgen.hookimpl
        def register_encoders(register):
            register("tiny", lambda spatial_dims, in_channels=1, embedding_dim=16:
                     TinyEncoder(spatial_dims, in_channels, embedding_dim))
        ```
    """


@hookspec
def register_losses(register):
    """Register losses and heads used to learn a similarity function.

    Call ``register(name, factory)``; ``factory(**kwargs)`` returns a
    ``torch.nn.Module`` whose ``forward(embeddings, labels)`` returns a scalar loss (or
    a head that scores pairs of embeddings). Recipes name it under ``loss:``.

    Example:
        ```python
        @convgen.hookimpl
        def register_losses(register):
            register("center", CenterLoss)
        ```
    """


@hookspec
def register_style_costs(register):
    """Register style costs: functions of two activations ``(N, C, *spatial)``.

    Call ``register(name, factory)``; ``factory(**kwargs)`` returns a callable
    ``cost(generated, target) -> scalar tensor`` that works for any number of spatial
    axes. The ``stylize`` recipe names it under ``style_cost:``. A cost may also offer
    ``statistic(activation)`` and ``distance(generated, statistic)``, so that targets
    are computed once and several styles blend by their statistics (see ``GramCost``).

    Example:
        ```python
        @convgen.hookimpl
        def register_style_costs(register):
            register("mean-std", MeanStdCost)
        ```
    """


@hookspec
def register_datasets(register):
    """Register datasets of labelled samples.

    Call ``register(name, factory)``; ``factory(**kwargs)`` returns a
    ``torch.utils.data.Dataset`` whose items are ``(tensor (C, *spatial), label int)``,
    with two attributes: ``labels`` (one int per item, so samplers and splits need not
    load the samples) and ``classes`` (``classes[label]`` names the identity). Recipes
    name it under ``dataset:``.

    Example:
        ```python
        @convgen.hookimpl
        def register_datasets(register):
            register("my-scans", MyScans)  # MyScans(root=".", ...)
        ```

    A dataset made from files should also say how ONE file became its samples: an
    attribute ``pipeline_spec`` (``{"name": PIPELINE, **options}``, see
    ``register_pipelines``) that training records in the weights file, and a class
    attribute ``pipeline_name`` so that ``evaluate`` can set the dataset's options from
    the pipeline an encoder recorded.

    A dataset may also say what happened to its inputs (photos with no face found,
    unreadable records): ``input_summary()`` returns one line for people (or None), which
    ``train``, ``evaluate`` and ``embed`` print once at the end as ``DATASET: line``, and
    ``input_report()`` a JSON-able dict, which they record under ``input_report`` in
    ``summary.json`` and ``report.json``.
    """


@hookspec
def register_pipelines(register):
    """Register input pipelines: how one file becomes the encoder's input(s).

    Call ``register(name, factory)``; ``factory(**options)`` (every option has a default
    and is JSON-able) returns a callable ``pipeline(path)`` that gives a float tensor
    ``(n, C, *spatial)``, ``n >= 1`` inputs for one file (a photo gives one face crop, an
    ECG record one window per heartbeat); the file's embedding is the normalised mean of
    theirs. The pipeline that made the training samples is saved with the weights, so
    every command reads files the way the encoder was trained (see `convgen.pipelines`).
    It may offer ``pipeline.preview(path)`` (a ``(C, H, W)`` tensor in [0, 1]) for
    contact sheets.

    Example:
        ```python
        @convgen.hookimpl
        def register_pipelines(register):
            def text_samples(scale: float = 1.0):
                return lambda path: read_txt(path)[None] * scale  # (1, C, L)
            register("text", text_samples)
        ```
    """


@hookspec
def register_baselines(register):
    """Register baselines that ``evaluate`` scores beside every encoder: what a learned encoder must beat.

    Call ``register(name, fn)``; ``fn(dataset, **context)`` returns one feature vector per
    sample, an array ``(len(dataset), D)``, computed without the evaluated encoder
    (``context`` holds ``spec``, ``seed``, ``batch_size`` and ``device`` for baselines that
    need them; accept ``**context``). ``evaluate`` L2-normalises the features and scores them
    with the same people, split and protocol as the encoder; a recipe lists the names it
    runs in its ``baselines`` key (the core registers ``samples`` and ``untrained``). Raise
    `convgen.errors.DataError` to skip a baseline on data it cannot handle: the report says why.

    Example:
        ```python
        @convgen.hookimpl
        def register_baselines(register):
            def spectrum(dataset, **context):
                \"\"\"Magnitude spectra of the samples.\"\"\"
                return np.stack([np.abs(np.fft.rfft(x.numpy().ravel())) for x, _ in dataset])
            register("spectrum", spectrum)
        ```
    """


# ---------------------------------------------------------------------------------------
# Files: who can read and write which file type
# ---------------------------------------------------------------------------------------


@hookspec
def register_readers(register):
    """Register readers of sample files, by file suffix.

    Call ``register(suffixes, reader)`` with one suffix or a list (``".nii.gz"``
    counts as one suffix; the longest match wins). ``reader(path)`` returns a float
    tensor ``(C, *spatial)``; use a ``monai.data.MetaTensor`` to carry metadata such as
    an affine. A file that cannot be read raises `convgen.errors.DataError`.

    Example:
        ```python
        @convgen.hookimpl
        def register_readers(register):
            register([".png", ".jpg"], read_image)
        ```
    """


@hookspec
def register_writers(register):
    """Register writers of sample files, by file suffix.

    Call ``register(suffixes, writer)``; ``writer(path, tensor)`` writes a
    ``(C, *spatial)`` tensor. Writers should write atomically (to a temporary name,
    then rename) so that an interrupted run leaves no half-written file.

    Example:
        ```python
        @convgen.hookimpl
        def register_writers(register):
            register(".png", write_png)
        ```
    """


# ---------------------------------------------------------------------------------------
# Galleries
# ---------------------------------------------------------------------------------------


@hookspec
def register_search_backends(register):
    """Register search backends: where a gallery keeps its nearest-neighbour index.

    Call ``register(name, cls)``; ``cls`` subclasses `convgen.gallery.search.SearchIndex`,
    sets ``kind = name``, its option ``defaults`` and its ``capabilities``
    (`convgen.gallery.search.Capabilities`: ``approximate``, ``files``, ``shared``,
    ``cheap_to_open``: the store reads these, never the name), and implements ``_add``,
    ``_remove``, ``_search`` (squared Euclidean distances, ascending, padded with
    ``(inf, -1)``), ``_clear``, ``_save(generation)`` and ``__len__``; ``cls(path, dim,
    **options)`` opens the index of the gallery database at ``path``, and its
    ``generation`` says which saved state of the gallery it reflects (None: rebuild it).
    ``convgen gallery create --backend NAME --backend-option KEY=VALUE`` chooses it.
    Register by reference so that its dependency is imported only when a gallery uses it.

    Example:
        ```python
        @convgen.hookimpl
        def register_search_backends(register):
            register("qdrant", "my_plugin.qdrant:QdrantIndex")  # class QdrantIndex(SearchIndex)
        ```
    """


# ---------------------------------------------------------------------------------------
# Recipes and commands
# ---------------------------------------------------------------------------------------


@hookspec
def register_recipes(register):
    """Register recipes: named, configurable jobs run by ``convgen run NAME``.

    Call ``register(name, run, defaults=..., components=..., description=...)``.
    ``run(config, out_dir)`` does the work and returns a `convgen.running.RecipeResult`
    (its ``summary`` is written to ``summary.json``; a plain JSON-serialisable dict or None
    also does); ``defaults`` is the complete default config (the keys a user may set);
    ``components`` maps top-level keys to registry kinds (``{"encoder": "encoder"}``),
    so that the keys inside those blocks are checked against the chosen component's
    arguments. See `convgen.registry.Recipe`. ``run`` and ``defaults`` may be
    ``"module:attribute"`` references (``defaults``: to the dict or to a function returning
    it), imported when the recipe is first used; ``description`` is what listings show.

    A recipe is derived from another by name, without importing it:
    ``register("mine-train", based_on="train", defaults={"epochs": 50}, description=...)``
    runs ``train``'s ``run`` with ``train``'s defaults, top-level keys replaced by
    ``defaults``, and ``train``'s components (plus any given). Give ``run`` to replace the
    parent's (it gets the same config), and ``without=("size",)`` to drop parent keys that
    your run does not read. Run a recipe from code by its name:
    ``convgen.plugin_api.recipe("train").run(config, out_dir)``.

    Recipes registered by one function of a heavy module can be declared instead, by name
    and description: ``register.lazy("my_plugin.recipes:register", {"count": "Count ..."})``
    calls ``my_plugin.recipes.register(register)`` the first time one of them is used. The
    declaration must match what the function registers (test it).

    Example:
        ```python
        @convgen.hookimpl
        def register_recipes(register):
            register("count", "my_plugin.count:run",
                     defaults={"dataset": {"name": "synthetic"}},
                     components={"dataset": "dataset"},
                     description="Count the samples of a dataset.")
            register("long-train", based_on="train", defaults={"epochs": 100},
                     description="train, for longer.")
        ```
    """


# ---------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------


@hookspec
def evaluation_readouts(evaluation):
    """Add a read-out of your own to an evaluation's report.

    Called by the ``evaluate`` recipe (and every recipe based on it) once the encoder's
    embeddings and the core metrics are in, before ``report.json`` is written.
    ``evaluation`` is a `convgen.metric.reports.Evaluation`: the resolved config, the
    dataset, its embeddings, the encoder that made them (embed more data with it instead
    of rebuilding it) and the report so far. Return a `convgen.metric.reports.Readout`
    (``key``: the report's new key; ``summary``: numbers for ``summary.json``), or None
    when this evaluation is not yours. Derive a recipe with a key of your own
    (``register("mine-evaluate", based_on="evaluate", defaults={"knn": {...}})``) and act
    only when it is set. Print a table if people should see the read-out; raise
    `convgen.errors.ConfigError` for a bad setting.

    Example:
        ```python
        @convgen.hookimpl
        def evaluation_readouts(evaluation):
            if not evaluation.config.get("norms"):
                return None
            norms = np.linalg.norm(evaluation.embeddings, axis=1)
            return Readout("norms", {"mean": float(norms.mean())}, summary={"mean_norm": float(norms.mean())})
        ```
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``convgen`` command line.

    ``cli`` is the root ``typer.Typer`` application; add commands or sub-apps to it.
    Raise `convgen.errors.ConvgenError` for user errors: the CLI turns it into
    a one-line message and a non-zero exit code.

    Example:
        ```python
        @convgen.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello(name: str):
                print(f"hello {name}")
        ```
    """
