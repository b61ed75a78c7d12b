"""Built-in style costs: ``gram`` (Gatys et al., normalised for any spatial_dims)."""

import convgen


@convgen.hookimpl
def register_style_costs(register):
    register("gram", "convgen.style.costs:GramCost")  # a reference: imported when first used
