"""Building a training run: model (+ DDP wrapper, compile), parameter groups, optimizer, warm-up + cosine
schedule, training and validation loaders, grad scaler. Nothing here trains; `src.engine.loop` does, and what
changes training on the way (EMA, freezing, clipping, ...) is a callback (`src.engine.callbacks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

from src.config import Config, TrainConfig
from src.data.dataset import CachedImageDataset, make_loader
from src.data.samplers import EpochWeightedSampler, image_weights
from src.data.transforms import transform_from_config
from src.distributed import SINGLE_PROCESS, DistributedContext
from src.errors import PipelineError
from src.formats.base import HeadSpec
from src.losses import MultiHeadLoss
from src.model import MultiHeadModel, model_from_config
from src.predict_loop import config_eval_loader
from src.runtime import DeviceLoader, Runtime


@dataclass
class Training:
    """What an optimizer step reads and changes; last.pt saves all of it except `trained`."""

    model: MultiHeadModel  # the bare model: saved, and validated unless a callback provides other weights
    trained: nn.Module  # what the forward pass runs: `model`, or its DDP wrapper under torchrun
    loss_fn: MultiHeadLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    wrap: Callable[[nn.Module], nn.Module] | None = None  # model -> `trained` (DDP, compile); None = itself

    def rewrap(self) -> None:
        """Make `trained` afresh from `model`: DDP records which parameters need gradients when it wraps them."""
        if self.wrap is not None:
            self.trained = self.wrap(self.model)

    @property
    def step(self) -> int:
        """Optimizer steps taken so far in this run (resumes with the scheduler)."""
        return self.scheduler.last_epoch


@dataclass
class TrainData:
    """The training set, its sampler and loader (model-ready batches on the device); `generator` is the
    shuffling RNG last.pt saves."""

    dataset: CachedImageDataset
    sampler: Sampler
    generator: torch.Generator
    loader: DeviceLoader
    smallest_batch: int  # images in the smallest batch one rank sees

    def set_epoch(self, epoch: int) -> None:
        """Augmentations (and the draws of a weighted or DDP sampler) are a function of the epoch."""
        self.dataset.set_epoch(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


@dataclass
class ValidData:
    """The held-out rows, this rank's share of them and the in-order loader over that share."""

    loader: DeviceLoader
    rows: np.ndarray  # every validation row, in order
    rank_rows: np.ndarray  # the rows this rank predicts (all of them on one process)
    positions: dict[int, int]  # row -> its position in `rows`, to gather the ranks' predictions
    targets: dict[str, np.ndarray]  # per head, in the order of `rows`


class WarmupCosine:
    """LR factor per optimizer step: linear warm-up, then cosine to `floor`; 0 for the first `frozen_steps` (a part
    the freeze callback holds, which then warms up from 0: its `warmup_steps` include the frozen ones)."""

    def __init__(self, total_steps: int, warmup_steps: int, frozen_steps: int = 0, floor: float = 0.01):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.frozen_steps, self.floor = frozen_steps, floor

    def __call__(self, step: int) -> float:
        if step < self.frozen_steps:
            return 0.0
        if step < self.warmup_steps:  # from 0 again after a hold: the first step after it is step 1 of the warm-up
            return (step - self.frozen_steps + 1) / (self.warmup_steps - self.frozen_steps)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_models(
    config: Config,
    heads: list[HeadSpec],
    runtime: Runtime,
    context: DistributedContext,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> tuple[MultiHeadModel, nn.Module]:
    """(model on its device, the module to train: `wrap(model)`, by default `trainer_wrapper`'s).

    Weights come from `model.pretrained` / `model.weights` as `src.model.model_from_config` resolves them (never a download).
    """
    model = model_from_config(config.model, heads)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    wrap = wrap or trainer_wrapper(config.train, runtime, context)
    return model, wrap(model)


def trainer_wrapper(
    tc: TrainConfig, runtime: Runtime, context: DistributedContext, log: Callable[[str], None] = print
) -> Callable[[nn.Module], nn.Module]:
    """model -> the module the forward pass runs: its DDP wrapper under torchrun, then torch.compile'd with
    `train.compile` where the platform compiles (else one log line, and it trains uncompiled). Checkpoints always
    save the bare model, so they load with or without compile."""
    compiled = tc.compile and can_compile(runtime, log)
    if compiled:
        torch._dynamo.reset()  # each run starts with dynamo's whole recompile budget (folds, unfreezing recompile)

    def wrap(model: nn.Module) -> nn.Module:
        trained = model
        if context.enabled:
            trained = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.on_cuda else None)
        return torch.compile(trained) if compiled else trained

    return wrap


def _compile_probe(values: torch.Tensor) -> torch.Tensor:
    return values * 2 + 1


def can_compile(runtime: Runtime, log: Callable[[str], None] = print) -> bool:
    """Whether torch.compile works here (its compiler toolchain: a C++ compiler on CPU, Triton on CUDA), tried on a
    tiny function so the model's own state is untouched; says why not in one line."""
    try:
        torch.compile(_compile_probe)(torch.ones(4, device=runtime.device))
        return True
    except Exception as error:  # inductor raises many kinds (BackendCompilerFailed, InvalidCxxCompiler, ...)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        log(
            f"train.compile: torch.compile cannot compile on this platform ({type(error).__name__}: {reason}); "
            f"training uncompiled"
        )
        return False


def param_groups(
    model: MultiHeadModel,
    weight_decay: float,
    lr: float | None = None,
    layer_decay: float | None = None,
    head_lr_mult: float = 1.0,
) -> list[dict]:
    """Backbone and head parameters in separate groups (head warm-up); no decay on biases and norms.

    `layer_decay`: timm's layer-wise lr decay groups instead (`timm.optim.param_groups_layer_decay` over the
    backbone's fine layer groups, the heads as the last layer), each with lr = `lr` x its scale. `head_lr_mult`
    multiplies the heads' lr. Each group names its `part` (backbone / heads) and its `group` (epochs.csv's lr_<group>).
    """
    if layer_decay is not None:
        return _layer_decay_groups(model, weight_decay, lr, layer_decay, head_lr_mult)
    groups = []
    for part_name, part in (("backbone", model.backbone), ("heads", model.heads)):
        decay = [p for p in part.parameters() if p.ndim > 1]
        no_decay = [p for p in part.parameters() if p.ndim <= 1]
        groups.append({"params": decay, "weight_decay": weight_decay, "part": part_name})
        groups.append({"params": no_decay, "weight_decay": 0.0, "part": part_name})
    if head_lr_mult != 1.0:  # only then: the default groups stay exactly as they were
        for group in groups:
            group.update({"lr": lr * head_lr_mult} if group["part"] == "heads" else {})
    return [group for group in groups if group["params"]]


def _layer_decay_groups(
    model: MultiHeadModel, weight_decay: float, lr: float, layer_decay: float, head_lr_mult: float
) -> list[dict]:
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay

    layer_of_name = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    name_of = {id(p): name for name, p in model.named_parameters()}
    head_ids = {id(p) for p in model.heads.parameters()}  # the heads are timm's last layer, alone in it
    groups = param_groups_layer_decay(
        model, weight_decay, no_weight_decay_list=model.no_weight_decay(), layer_decay=layer_decay
    )
    for group in groups:
        layer = layer_of_name[name_of[id(group["params"][0])]]
        is_heads = id(group["params"][0]) in head_ids
        group.update(
            {
                "lr": lr * group["lr_scale"] * (head_lr_mult if is_heads else 1.0),
                "part": "heads" if is_heads else "backbone",
                "group": "heads" if is_heads else f"depth{layer}",
            }
        )
    return groups


def build_optimizer(model: MultiHeadModel, loss_fn: MultiHeadLoss, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the model's groups (`param_groups`: layer decay and head lr multiplier from `tc`), then the loss's
    learned weights (if any)."""
    groups = param_groups(model, tc.weight_decay, tc.lr, tc.layer_decay, tc.head_lr_mult)
    return torch.optim.AdamW(groups + loss_fn.parameter_group(), lr=tc.lr)


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps per epoch: one per `accumulate` batches, and one for a partial group at the end."""
    return math.ceil(batches / accumulate)


def build_scheduler(
    optimizer: torch.optim.Optimizer, tc: TrainConfig, epoch_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine per group over the run (a callback may hold a group at 0 first: `hold_group`)."""
    total_steps = epoch_steps * tc.epochs
    warmup = int(round(tc.warmup_epochs * epoch_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [WarmupCosine(total_steps, warmup) for _ in optimizer.param_groups]
    )


def hold_group(scheduler: torch.optim.lr_scheduler.LambdaLR, index: int, steps: int) -> None:
    """Group `index` stays at lr 0 for the first `steps` optimizer steps, then warms up from 0 (its warm-up moves
    by `steps`); call it before the first step."""
    schedule = scheduler.lr_lambdas[index]
    held = WarmupCosine(schedule.total_steps, schedule.warmup_steps + steps, steps, schedule.floor)
    scheduler.lr_lambdas[index] = held
    group = scheduler.optimizer.param_groups[index]
    group["lr"] = scheduler.base_lrs[index] * held(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def build_grad_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    """The loss scaler fp16 autocast needs (a no-op in fp32 and bf16)."""
    return torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler())


def make_train_loader(
    dataset: CachedImageDataset,
    batch_size: int,
    sampler,
    tc: TrainConfig,
    runtime: Runtime,
    drop_last: bool,
    generator: torch.Generator,
    num_workers=None,
) -> DeviceLoader:
    """The training loader: uint8 batches augmented per image, normalised on the device (the benchmark builds it
    here too, so it measures what training runs). `num_workers` overrides train.num_workers."""
    return make_loader(
        dataset,
        batch_size,
        runtime,
        sampler,
        drop_last,
        tc.num_workers if num_workers is None else num_workers,
        tc.persistent_workers,
        tc.prefetch_factor,
        shuffle_generator=generator,
    )


def build_train_data(
    config: Config,
    images: np.ndarray,
    rows: np.ndarray,
    targets: dict[str, np.ndarray],
    runtime: Runtime,
    context: DistributedContext = SINGLE_PROCESS,
    num_workers: int | None = None,
) -> TrainData:
    """Augmented training set over `rows` of the uint8 cache; each rank gets train.batch_size / processes per batch."""
    tc = config.train
    transform = transform_from_config(config, "train")
    dataset = CachedImageDataset(images, rows, targets, transform, tc.seed)
    generator = torch.Generator().manual_seed(tc.seed)
    per_rank_batch = max(1, tc.batch_size // context.world_size)
    sampler = _train_sampler(config, dataset, targets, rows, generator, context)
    weighted = isinstance(sampler, EpochWeightedSampler)
    drawn = len(sampler) * context.world_size if weighted else len(rows)  # images one epoch draws over all ranks
    drop_last = drawn > tc.batch_size
    loader = make_train_loader(dataset, per_rank_batch, sampler, tc, runtime, drop_last, generator, num_workers)
    smallest = per_rank_batch if drop_last else drawn // context.world_size
    return TrainData(dataset, sampler, generator, loader, smallest)


def _train_sampler(
    config: Config,
    dataset: CachedImageDataset,
    targets: dict[str, np.ndarray],
    rows: np.ndarray,
    generator: torch.Generator,
    context: DistributedContext,
) -> Sampler:
    """train.sampler: uniform (shuffled once through; DDP shards) or weighted towards rare classes."""
    tc, choice = config.train, config.train.sampler
    if choice.name != "uniform":
        head = choice.head or next(iter(targets))
        if head not in targets:
            raise PipelineError(f"config train.sampler.head: no head '{head}'; the heads: {', '.join(targets)}")
        weights = image_weights(targets[head][rows], choice.name, choice.threshold)
        samples = choice.samples_per_epoch or len(rows)
        return EpochWeightedSampler(weights, samples, tc.seed, context.rank, context.world_size)
    if context.enabled:
        return DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=tc.seed, drop_last=True)
    return RandomSampler(dataset, generator=generator)


def build_valid_data(
    config: Config,
    images: np.ndarray,
    rows: np.ndarray | None,
    targets: dict[str, np.ndarray],
    runtime: Runtime,
    context: DistributedContext,
) -> ValidData | None:
    """The validation set over `rows` (eval transforms), sharded across ranks; None for a full fit."""
    if rows is None:
        return None
    # A sampler needs only the length: positions 0..len(rows)-1, this rank's share of them.
    sampler = DistributedSampler(rows, context.world_size, context.rank, shuffle=False) if context.enabled else None
    rank_rows = rows[list(sampler)] if sampler is not None else rows
    loader = config_eval_loader(config, images, rows, runtime, targets, sampler)
    positions = {int(row): position for position, row in enumerate(rows)}
    return ValidData(loader, rows, rank_rows, positions, {name: values[rows] for name, values in targets.items()})


def refuse_single_image_batches(model: nn.Module, smallest_batch: int, batch_size: int, processes: int) -> None:
    """BatchNorm cannot train on one image per batch (torch stops mid-epoch with a bare ValueError): say so first."""
    if smallest_batch < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise PipelineError(
            f"train.batch_size {batch_size} over {processes} process(es) gives batches of {smallest_batch} "
            "image(s); the model's BatchNorm needs at least 2: raise train.batch_size (or train on more images)"
        )
