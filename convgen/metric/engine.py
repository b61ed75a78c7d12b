"""The one training loop, for every recipe and every ``spatial_dims``.

It trains an `convgen.metric.embedder.Embedder` with any registered loss over
P×K batches; validates after each epoch, and (keeping the best) the starting weights
too, as "epoch 0", so a run in which training only hurts keeps its start; logs a JSON
line per epoch (``metrics.jsonl``) and draws ``curves.png``; keeps the best encoder
(``encoder.safetensors``, with the loss's trained head beside it when the loss has one,
``save_head``); and writes ``checkpoint.safetensors`` atomically after every
epoch: model, loss parameters, optimiser state, RNG state and history in one file, so a
resumed run continues exactly where the checkpoint left it. Under ``torchrun`` the same
loop runs with DistributedDataParallel (see `convgen.distributed`).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from convgen import distributed, progress
from convgen.errors import ConfigError, DataError
from convgen.io import atomic_path, atomic_write_text
from convgen.weights import fingerprint, save_encoder

CHECKPOINT = "checkpoint.safetensors"
BEST = "encoder.safetensors"
METRICS = "metrics.jsonl"

OPTIMIZERS = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def make_optimizer(params, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 1e-4, momentum: float = 0.9):
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; use one of: {', '.join(OPTIMIZERS)}")
    extra = {"momentum": momentum} if name == "sgd" else {}
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, **extra)


def lr_factor(step: int, total: int, name: str = "cosine", warmup_steps: int = 0, gamma: float = 0.1, milestones=()) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: a pure function, so resuming is exact.

    ``cosine`` decays to 0 over the run; ``step`` multiplies by ``gamma`` at each
    milestone (in steps); ``constant`` keeps the base rate. A linear warm-up comes first.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    if name == "cosine":
        done = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    if name == "step":
        return gamma ** sum(step >= m for m in milestones)
    raise ConfigError(f"unknown scheduler {name!r}; use cosine, step or constant")


class Trainer:
    """Trains ``model`` (an Embedder) with ``loss_fn`` and writes everything into ``out_dir``.

    Args:
        spec: the encoder spec (see `convgen.weights.encoder_spec`), saved with the weights.
        validate: ``validate(model) -> dict`` of metrics, run on the main process after
            each epoch; ``monitor`` names the metric that picks the best model (lower is
            better when ``mode="min"``), and ``tie_break`` (``(metric, mode)``) decides
            between epochs whose ``monitor`` is equal (a rank-1 rate over few searches
            ties often).
        keep: ``"best"`` saves the epoch ``monitor`` prefers, the starting weights
            included: a fresh run scores them first as epoch 0 (a history row without
            ``loss``), and a trained epoch replaces them only when strictly better;
            ``"last"`` saves the final
            epoch whatever validation says (still computed and logged), for a schedule
            that ends well (cosine to zero) when the validation people are too few to
            pick an epoch reliably.
        run_id: a digest of the resolved config; resuming with another config is refused.
    """

    pipeline: dict | None = None  # the input pipeline that made the samples, saved with the encoder

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: torch.nn.Module,
        *,
        spec: dict,
        out_dir: Path,
        epochs: int,
        optimizer: dict,
        scheduler: dict,
        grad_clip: float | None = None,
        device: torch.device = torch.device("cpu"),
        validate: Callable[[torch.nn.Module], dict] | None = None,
        monitor: str = "val_eer",
        mode: str = "min",
        tie_break: tuple[str, str] | None = None,
        keep: str = "best",
        run_id: str = "",
    ):
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
        if keep not in ("best", "last"):
            raise ConfigError(f"keep must be best or last, got {keep!r}")
        self.keep = keep
        self.device = distributed.setup(device)
        self.model, self.loss_fn = model.to(self.device), loss_fn.to(self.device)
        self.spec, self.out_dir, self.epochs = spec, Path(out_dir), epochs
        self.optimizer = make_optimizer(list(model.parameters()) + list(loss_fn.parameters()), **optimizer)
        self.scheduler, self.grad_clip = dict(scheduler), grad_clip
        self.validate, self.monitor, self.mode, self.run_id = validate, monitor, mode, run_id
        self.tie_break, self.best_tie, self.best_epoch = tie_break, None, None
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.net = model
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.epoch, self.step, self.best, self.history = 0, 0, None, []

    # -- the loop ------------------------------------------------------------------------

    def fit(self, dataset: Dataset, sampler, resume: bool = False) -> dict:
        """Train for the configured epochs (continuing from the checkpoint when ``resume``)."""
        if resume:
            self.load_checkpoint()
        total_steps = self.epochs * len(sampler)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0)
        if self.validate is not None and self.keep == "best" and self.epoch == 0 and not self.history:
            self._score_start(total_steps)  # a resumed run has it in its history already
        while self.epoch < self.epochs:
            sampler.set_epoch(self.epoch)
            train_stats = self._train_epoch(loader, total_steps)
            self._end_epoch(train_stats)
        distributed.barrier()
        if self.best_epoch == 0 and distributed.is_main():
            Console().print(f"kept epoch 0, the starting weights: no trained epoch beat their {self.monitor} ({self.best:.4g})", highlight=False)
        return {"epochs": self.epochs, "best": self.best, "best_epoch": self.best_epoch, "monitor": self.monitor,
                "history": self.history}  # fmt: skip

    def _train_epoch(self, loader, total_steps: int) -> dict:
        self.net.train()
        sums, count, seen, start = {}, 0, 0, time.perf_counter()
        with progress.bar(f"epoch {self.epoch + 1}/{self.epochs}", show=distributed.is_main()) as bar:
            task = bar.add_task("train", total=len(loader), info="")
            for x, y in loader:
                self._set_lr(total_steps)
                x, y = x.to(self.device), torch.as_tensor(y).to(self.device)
                embeddings = distributed.gather(self.net(x))
                labels = distributed.gather(y)
                loss = self.loss_fn(embeddings, labels)
                if not torch.isfinite(loss):
                    raise DataError(
                        f"the loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step}; "
                        "lower optimizer.lr or set grad_clip"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                self.step += 1
                stats = {"loss": loss.item(), **getattr(self.loss_fn, "stats", {})}
                stats.pop("triplets", None)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                count += 1
                seen += len(labels)
                rate = seen / (time.perf_counter() - start)
                info = " ".join(f"{k} {v:.3g}" for k, v in stats.items()) + f" {rate:.0f} samples/s"
                bar.update(task, advance=1, info=info)
        means = {k: v / max(count, 1) for k, v in sums.items()}
        means["samples_per_s"] = seen / (time.perf_counter() - start)
        return means

    def _set_lr(self, total_steps: int) -> None:
        options = dict(self.scheduler)
        per_epoch = total_steps / self.epochs
        name = options.pop("name", "cosine")
        warmup = int(options.pop("warmup_epochs", 0) * per_epoch)
        milestones = [m * per_epoch for m in options.pop("milestones", [])]
        factor = lr_factor(self.step, total_steps, name, warmup, milestones=milestones, **options)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def _score_start(self, total_steps: int) -> None:
        """Epoch 0: validate the starting weights (random, or those fine-tuned from) before any step.

        Its row has the validation metrics and the first step's lr, no loss. It is the first
        best, so ``encoder.safetensors`` holds the start until an epoch beats it. Random states
        are restored afterwards: scoring the start changes nothing about the training.
        """
        self._set_lr(total_steps)
        row = {"epoch": 0, "lr": self.optimizer.param_groups[0]["lr"]}
        if distributed.is_main():
            states = torch.get_rng_state(), np.random.get_state(), random.getstate()
            self._validate_into(row)
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
            if self._is_better(row):
                self._keep(row)
            self.history.append(row)
            self.save_checkpoint()  # resuming after a crash in epoch 1 does not score the start again
            self._write_logs()
            self._report(row)
        else:
            self.history.append(row)
        distributed.barrier()

    def _end_epoch(self, train_stats: dict) -> None:
        row = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_stats}
        if distributed.is_main():
            self._validate_into(row)
            if self.validate is None or self.keep == "last" or self._is_better(row):
                self._keep(row)  # without validation: the last
            self.history.append(row)
            self.epoch += 1
            self.save_checkpoint()
            self._write_logs()
            self._report(row)
        else:
            self.history.append(row)
            self.epoch += 1
        distributed.barrier()

    def _validate_into(self, row: dict) -> None:
        if self.validate is not None:
            self.model.eval()
            with torch.no_grad():
                row.update(self.validate(self.model))

    def _keep(self, row: dict) -> None:
        """Save the encoder of ``row``'s epoch as the best, with the loss's head when one was trained."""
        self.best = row.get(self.monitor, self.best)
        self.best_tie = row.get(self.tie_break[0]) if self.tie_break else None
        self.best_epoch = row["epoch"]
        fp = save_encoder(self.out_dir / BEST, self.model.encoder, self.spec, self.pipeline)
        if not hasattr(self.loss_fn, "save_head"):
            return
        if row["epoch"] > 0:  # a trained verification head travels with its encoder
            self.loss_fn.save_head(self.out_dir / BEST, fp)
        else:  # an untrained head scores nothing: the start is kept alone, and distances score it
            from convgen.metric.losses import head_path

            head_path(self.out_dir / BEST).unlink(missing_ok=True)

    def _report(self, row: dict) -> None:
        shown = {k: v for k, v in row.items() if k not in ("epoch", "lr", "samples_per_s")}
        text = "  ".join(f"{k} {v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
        best = " (best)" if self.validate is not None and row["epoch"] == self.best_epoch else ""
        speed = f"  {row['samples_per_s']:.0f} samples/s" if "samples_per_s" in row else "  (the starting weights, before training)"
        Console().print(f"epoch {row['epoch']}/{self.epochs}  {text}{best}{speed}", highlight=False, soft_wrap=True)

    def _is_better(self, row: dict) -> bool:
        value = row.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best is None:
            return True
        if value == self.best and self.tie_break:
            key, mode = self.tie_break
            tie = row.get(key)
            if tie is None or (isinstance(tie, float) and math.isnan(tie)):
                return False
            return self.best_tie is None or (tie < self.best_tie if mode == "min" else tie > self.best_tie)
        return value < self.best if self.mode == "min" else value > self.best

    def _write_logs(self) -> None:
        atomic_write_text(self.out_dir / METRICS, "".join(json.dumps(row) + "\n" for row in self.history))
        from convgen.metric.plots import plot_curves

        keys = [k for k in ("loss", "active_fraction") if any(k in row for row in self.history)]  # epoch 0 has no loss
        keys += [self.monitor] if self.validate else []
        if any(isinstance(row.get(k), (int, float)) and math.isfinite(row[k]) for row in self.history for k in keys):
            plot_curves(self.out_dir / "curves.png", self.history, keys=tuple(keys))

    # -- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Model, loss, optimiser, RNG and history in one safetensors file, replaced atomically."""
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.encoder.state_dict().items()}
        tensors |= {f"loss.{k}": v.detach().cpu().contiguous() for k, v in self.loss_fn.state_dict().items()}
        optim = self.optimizer.state_dict()
        other_state = {}
        for pid, state in optim["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    other_state[f"{pid}.{key}"] = value
        tensors["rng.torch"] = torch.get_rng_state()
        trainer = {
            "epoch": self.epoch, "step": self.step, "best": self.best, "best_tie": self.best_tie,
            "best_epoch": self.best_epoch, "history": self.history,
            "param_groups": optim["param_groups"], "optim_other": other_state, "run_id": self.run_id,
            "numpy_rng": _numpy_state(), "python_rng": _python_state(),
        }  # fmt: skip
        metadata = {
            "format": "convgen.checkpoint/1",
            "spec": json.dumps(self.spec, sort_keys=True),
            "fingerprint": fingerprint(self.spec, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}),
            "trainer": json.dumps(trainer),
        }
        with atomic_path(self.out_dir / CHECKPOINT) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    def load_checkpoint(self) -> None:
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            raise ConfigError(f"nothing to resume: {path} does not exist (run without --resume to start)")
        from convgen.weights import check_safetensors

        header = check_safetensors(path, "training checkpoint")
        metadata = header.get("__metadata__") or {}
        if metadata.get("format") != "convgen.checkpoint/1":
            raise DataError(f"{path} is not a convgen training checkpoint")
        trainer = json.loads(metadata["trainer"])
        if self.run_id and trainer.get("run_id") != self.run_id:
            raise ConfigError(f"{path} was written by a run with another config; resume with that run's config.yaml")
        tensors = load_file(str(path))
        section = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
        self.model.encoder.load_state_dict(section("model."))
        self.loss_fn.load_state_dict(section("loss."))
        state: dict = {}
        for key, value in section("optim.").items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        for key, value in trainer["optim_other"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": trainer["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        np.random.set_state(_numpy_restore(trainer["numpy_rng"]))
        random.setstate(_python_restore(trainer["python_rng"]))
        self.epoch, self.step, self.best, self.history = trainer["epoch"], trainer["step"], trainer["best"], trainer["history"]
        self.best_tie, self.best_epoch = trainer.get("best_tie"), trainer.get("best_epoch")


def _numpy_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, cached]


def _numpy_restore(state):
    name, keys, pos, has_gauss, cached = state
    return name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached


def _python_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_restore(state):
    version, internal, gauss = state
    return version, tuple(internal), gauss
