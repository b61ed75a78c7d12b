"""Built-in losses: ``triplet`` (FaceNet, online mining), ``contrastive``, ``pair-classifier`` and
``arcface`` (additive angular margin softmax over the training identities)."""

import convgen


@convgen.hookimpl
def register_losses(register):
    register("triplet", "convgen.metric.losses:TripletLoss")  # references: imported when first used
    register("contrastive", "convgen.metric.losses:ContrastiveLoss")
    register("pair-classifier", "convgen.metric.losses:PairClassifierLoss")
    register("arcface", "convgen.metric.losses:ArcFaceLoss")
