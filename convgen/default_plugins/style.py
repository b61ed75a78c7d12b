"""Built-in style costs: ``gram`` (Gatys et al., normalised for any spatial_dims)."""

import convgen


@convgen.hookimpl
def register_style_costs(register):
    from convgen.style.costs import GramCost

    register("gram", GramCost)
