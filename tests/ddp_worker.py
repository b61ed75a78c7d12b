"""Started by torchrun from test_distributed.py: one DDP step's loss and gradients.

Each process embeds its own slice of a fixed global batch (the slices have different
lengths), gathers the embeddings with gradients, computes the loss on the global batch
and back-propagates; rank 0 saves the loss and the DDP-averaged gradients.
"""

import os
import sys

import torch
from safetensors.torch import save_file

from convgen import distributed, registry
from convgen.metric.embedder import Embedder
from convgen.nets import ResNetEncoder


def global_batch():
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 6, 6])
    return torch.randn(len(labels), 1, 32, generator=gen), labels


def build(loss_spec):
    torch.manual_seed(0)
    # instance norm: per-sample statistics, so a slice embeds exactly as in the whole batch
    model = Embedder(ResNetEncoder(1, channels=(4, 8), strides=(1, 2), embedding_dim=16, norm="instance"))
    return model, registry.build("loss", loss_spec, embedding_dim=16)


def main(out: str, mining: str) -> None:
    distributed.setup(torch.device("cpu"))
    model, loss_fn = build({"name": "triplet", "mining": mining})
    net = torch.nn.parallel.DistributedDataParallel(model)
    x, y = global_batch()
    cut = 9  # rank 0 holds 9 samples, rank 1 the other 8
    mine = slice(0, cut) if distributed.rank() == 0 else slice(cut, None)
    embeddings = distributed.gather(net(x[mine]))
    labels = distributed.gather(y[mine])
    loss = loss_fn(embeddings, labels)
    loss.backward()
    if distributed.is_main():
        tensors = {"loss": loss.detach().reshape(1), "labels": labels}
        tensors |= {f"grad.{name}": p.grad for name, p in model.named_parameters()}
        save_file(tensors, out)
    del net
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # as convgen's CLI does under torchrun: skip the interpreter finalisation that gloo's
    # threads can abort (pytorch/pytorch#190489); everything is saved by now
    sys.stderr.flush()
    os._exit(0)
