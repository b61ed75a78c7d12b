"""Built-in encoders: ``resnet`` and ``vgg`` for any spatial_dims; ``vgg19-torchvision`` (2D, local ImageNet weights)."""

import convgen


@convgen.hookimpl
def register_encoders(register):
    from convgen.nets import ResNetEncoder, VGGEncoder
    from convgen.nets.torchvision_vgg import TorchvisionVGG19

    register("resnet", ResNetEncoder)
    register("vgg", VGGEncoder)
    register("vgg19-torchvision", TorchvisionVGG19)
