"""Dimension-agnostic encoders with named feature taps and receptive-field arithmetic."""

from convgen.nets.receptive_field import ReceptiveField
from convgen.nets.resnet import ResNetEncoder
from convgen.nets.tapped import TappedEncoder
from convgen.nets.vgg import VGGEncoder

__all__ = ["ReceptiveField", "ResNetEncoder", "TappedEncoder", "VGGEncoder"]
