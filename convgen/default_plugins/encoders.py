"""Built-in encoders: ``resnet``, ``vgg`` and ``random-multiscale`` for any spatial_dims; ``vgg19-torchvision`` (2D, local ImageNet weights)."""

import convgen


@convgen.hookimpl
def register_encoders(register):
    register("resnet", "convgen.nets:ResNetEncoder")  # references: imported when first used
    register("vgg", "convgen.nets:VGGEncoder")
    register("random-multiscale", "convgen.nets.random_multiscale:RandomMultiScale")
    register("vgg19-torchvision", "convgen.nets.torchvision_vgg:TorchvisionVGG19")
