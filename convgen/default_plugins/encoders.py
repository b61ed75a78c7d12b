"""Built-in encoders: ``resnet`` and ``vgg``, for any spatial_dims."""

import convgen


@convgen.hookimpl
def register_encoders(register):
    from convgen.nets import ResNetEncoder, VGGEncoder

    register("resnet", ResNetEncoder)
    register("vgg", VGGEncoder)
