"""The zstack plugin's hook implementations, loaded through the ``convgen`` entry point.

Components are registered by reference (``"module:attribute"``), so that ``convgen``
starts as fast with this plugin installed as without it: tifffile, torch and the core's
recipes are imported the first time a component is used, not to list it.
"""


import convgen
from convgen.plugin_api import build_component

# --8<-- [start:suffixes]
# Longer than the faces plugin's ".tif": the longest registered suffix wins, so these
# files come here and every other TIFF still goes to the 2D photo reader.
SUFFIXES = [".ome.tif", ".ome.tiff"]
# --8<-- [end:suffixes]


# --8<-- [start:files]
@convgen.hookimpl
def register_readers(register):
    register(SUFFIXES, "convgen_zstack.stacks:read_stack")  # imported when a stack is first read


@convgen.hookimpl
def register_writers(register):
    register(SUFFIXES, "convgen_zstack.stacks:write_stack")
# --8<-- [end:files]


# --8<-- [start:describe]
def describe(config, out_dir):
    """Samples per identity, sample shape and value range of any registered dataset."""
    dataset = build_component("dataset", config["dataset"])
    counts, low, high = {}, float("inf"), float("-inf")
    for index, label in enumerate(dataset.labels):
        name = dataset.classes[label]
        counts[name] = counts.get(name, 0) + 1
        sample, _ = dataset[index]
        low, high = min(low, float(sample.min())), max(high, float(sample.max()))
    shape = list(dataset[0][0].shape)
    print(f"{len(dataset)} samples of shape {shape}, {len(counts)} identities")
    return {
        "samples": len(dataset),
        "shape": shape,
        "per_identity": counts,
        "range": [low, high],
    }
# --8<-- [end:describe]


# --8<-- [start:stylize]
#: The core ``stylize`` recipe's keys this recipe changes, for z-stacks.
STYLIZE = dict(
    spatial_dims=3,  # the demo pair (no content, no style given) is 3D too
    size=[16, 64, 64],  # resample the content to Z × Y × X: stacks are thin
    style_size=[16, 64, 64],
    encoder={"name": "vgg", "channels": [8, 16, 32, 32], "convs": [1, 1, 1, 1],
             "pool": "avg"},  # fmt: skip
    style_layers=["relu1_1", "relu2_1", "relu3_1"],  # a 4th sees too few Z
    content_layers=["relu2_1"],
    iterations=100,
    output="stylized.ome.tif",  # the suffix picks the writer: this plugin's
)


@convgen.hookimpl
def register_recipes(register):
    register(
        "zstack-stylize",
        based_on="stylize",  # the core's recipe, unchanged: only these defaults are new
        defaults=STYLIZE,
        description="Gram style transfer between OME-TIFF z-stacks, in 3D.",
    )
    register(
        "zstack-describe",
        describe,
        defaults={"dataset": {"name": "folder", "root": "."}},
        components={"dataset": "dataset"},  # check the dataset block's keys
        description="Describe a folder of z-stacks: counts, shape, value range.",
    )
# --8<-- [end:stylize]
