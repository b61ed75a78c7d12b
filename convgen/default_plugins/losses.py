"""Built-in losses: ``triplet`` (FaceNet, online mining), ``contrastive`` and ``pair-classifier``."""

import convgen


@convgen.hookimpl
def register_losses(register):
    from convgen.metric.losses import ContrastiveLoss, PairClassifierLoss, TripletLoss

    register("triplet", TripletLoss)
    register("contrastive", ContrastiveLoss)
    register("pair-classifier", PairClassifierLoss)
