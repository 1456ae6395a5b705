"""Experiment configuration: YAML -> typed, validated objects; `key.path=value` overrides.

Unknown keys and wrong types are errors that name the file, the line and the key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from src.data.images import MAX_PIXELS
from src.errors import PipelineError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    root: Path = Field(description="the competition folder, e.g. input/imet-2019")
    image_size: int = Field(64, ge=8, description="side of the square image the model sees")
    n_folds: int = Field(5, ge=2)
    fold_seed: int = 42
    solution: list[Path] = Field(
        [], description="held-apart test answers in submission format (demo) to print a test score"
    )
    skip_unreadable: bool = Field(False, description="skip (and log) unreadable training images instead of stopping")
    train_subset: int | None = Field(
        None,
        ge=2,
        description="train on about this many training images only, the first of each fold in the folds file's "
        "order (a quick check: the training kernel's local check uses it); null = all",
    )
    max_pixels: int = Field(
        MAX_PIXELS,
        ge=1,
        description="an image over this many pixels (width x height, from its header) is refused "
        "before decoding, as a decompression bomb (skipped with skip_unreadable)",
    )
    # Decode, crop and cache policy (README "Image cache"); the defaults are today's square cache at image_size.
    resize: Literal["squash", "short_side", "pad"] = Field(
        "squash",
        description="how the cache stores an image: squash to a square, short_side (keep the aspect, shorter side "
        "at cache_size) or pad (letterbox onto a square)",
    )
    cache_size: int | None = Field(
        None,
        ge=8,
        description="the cached side (short_side: the shorter side); null = image_size; crops of "
        "image_size are cut from it",
    )
    eval_crop: Literal["center", "resize"] = Field(
        "center",
        description="eval view of a cache larger than image_size: center (a crop at the cached scale) or resize "
        "(shorter side to image_size, then the central square)",
    )
    cache: Literal["raw", "packed", "auto"] = Field(
        "raw",
        description="raw (decoded uint8, fastest), packed (encoded once into one file + offset index, decoded per "
        "image in the loader workers) or auto (raw when it fits cache_disk_budget_gb and the free disk)",
    )
    cache_format: Literal["png", "jpeg", "webp"] = Field("jpeg", description="the packed cache's codec (png: lossless)")
    cache_quality: int = Field(95, ge=1, le=100, description="jpeg/webp quality of the packed cache")
    prebuilt_cache: Path | None = Field(
        None,
        description="a packed cache of the training images built on another machine (`kernel cache`; a training "
        "kernel sets it to the attached dataset): read in place instead of building one; it must hold every training "
        "image at this resize and cache size",
    )
    cache_disk_budget_gb: float | None = Field(
        None, gt=0, description="data.cache: auto takes raw only when it needs at most this much disk (null: free disk)"
    )

    @property
    def source_size(self) -> int:
        """The cached side: cache_size, else image_size."""
        return self.cache_size or self.image_size

    @property
    def source_is_input(self) -> bool:
        """True when the cached images are already the model's image_size x image_size input (no crop to cut)."""
        return self.resize != "short_side" and self.source_size == self.image_size

    @field_validator("cache_size")
    @classmethod
    def _cache_not_below_input(cls, value: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("image_size")
        if value is not None and size is not None and value < size:
            raise PydanticCustomError(
                "cache_size",
                "is below data.image_size ({size}): crops are cut from the cache; set cache_size >= image_size or "
                "leave it null",
                {"size": size},
            )
        return value

    @field_validator("solution", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [] if value is None else [value] if isinstance(value, (str, Path)) else value


class ModelConfig(Section):
    name: str = Field("resnet18", description="timm architecture; follows model.pretrained when only that is given")
    pretrained: str | None = Field(
        None,
        description="timm pretrained tag, e.g. resnet50.a1_in1k: read from input/weights/<tag>/, which the "
        "`weights` stage fetches once (train never downloads); null = no pretrained weights",
    )
    weights: Path | None = Field(
        None,
        description="a local weight file (or a folder the `weights` stage made) instead "
        "of model.pretrained; null with pretrained null trains from scratch",
    )
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path_rate: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="stochastic depth: timm.create_model's drop_path_rate (0 = off; only passed when set)",
    )
    forbid_pretrained: bool = Field(
        False, description="competition rules forbid pretrained weights: refuse model.pretrained and any weight file"
    )

    @field_validator("forbid_pretrained")
    @classmethod
    def _nothing_pretrained_when_forbidden(cls, value: bool, info: ValidationInfo) -> bool:
        # At load, before any stage works (a refusal at model build came after the image cache was decoded).
        given = [key for key in ("pretrained", "weights") if value and info.data.get(key) is not None]
        if given:
            raise PydanticCustomError(
                "forbidden_pretrained",
                "forbid_pretrained is true (this competition forbids pretrained weights) but model.{key} is "
                "{given}; set model.{key}=null",
                {"key": given[0], "given": str(info.data[given[0]])},
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _name_from_tag(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("pretrained"), str) and data.get("name") is None:
            data = {**data, "name": data["pretrained"].partition(".")[0]}
        return data

    @field_validator("pretrained")
    @classmethod
    def _tag_fits_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        arch, _, tag = value.partition(".")
        if not re.fullmatch(r"[A-Za-z0-9_]+", arch) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", tag):
            raise PydanticCustomError(
                "pretrained_tag",
                "is not a timm tag <architecture>.<tag>; name one, e.g. "
                "resnet50.a1_in1k (timm.list_pretrained('<architecture>.*') lists them)",
            )
        name = info.data.get("name")
        if name is not None and name != arch:
            raise PydanticCustomError(
                "pretrained_name",
                "is a {arch} tag but model.name is {name}; set model.name: "
                "{arch}, or leave model.name out (it follows the tag)",
                {"arch": arch, "name": name},
            )
        return value

    @field_validator("weights")
    @classmethod
    def _one_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("pretrained"):
            raise PydanticCustomError(
                "two_weight_sources", "and model.pretrained are both set; keep one (set the other to null)"
            )
        return value


class LossConfig(Section):
    name: Literal["bce", "focal", "asl", "soft_fbeta"] = Field(
        "bce", description="multilabel heads' loss; soft_fbeta = 1 - a differentiable per-image F-beta (a last stage)"
    )
    fbeta_beta: float = Field(2.0, gt=0, description="soft_fbeta's beta (iMet scores F2)")
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="for softmax heads")
    head_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed",
        description="multi-head total: 'fixed' = sum of loss_weight * loss; 'uncertainty' = learned per-head "
        "log-variances s (Kendall et al. 2018): sum of loss_weight * (exp(-s) * loss + s)",
    )
    uncertainty_lr: float = Field(
        0.01,
        gt=0,
        description="peak learning rate of the learned log-variances (in the trainer's AdamW, no weight decay, same warm-up and cosine schedule as the heads)",
    )


class SamplerConfig(Section):
    """Which images an epoch draws (src/data/samplers.py)."""

    name: Literal["uniform", "repeat_factor", "log", "class_balanced"] = Field(
        "uniform", description="uniform = every image once per epoch, shuffled; the others draw rare classes more often"
    )
    head: str | None = Field(None, description="the head whose labels weigh the images; null = the format's first")
    threshold: float = Field(0.001, gt=0, le=1, description="repeat_factor: classes rarer than this share repeat")
    samples_per_epoch: int | None = Field(None, ge=1, description="draws per epoch; null = the training set's size")


class DropNoisyConfig(Section):
    experiment: str = Field(min_length=1, description="the earlier experiment whose oof.npz ranks the rows")
    quantile: float = Field(gt=0.0, lt=1.0, description="the share of each run's training rows left out")


class TrainConfig(Section):
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    head_warmup_epochs: int | None = Field(
        None,
        exclude=True,
        description="moved: the freeze callback's `rewarm` "
        "(train.callbacks: [{name: freeze, epochs: N, rewarm: true}])",
    )
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="layer-wise lr decay (timm's param_groups_layer_decay): "
        "layer i of L gets lr * layer_decay^(L-1-i), the heads "
        "lr; null = off",
    )
    head_lr_mult: float = Field(1.0, gt=0, description="the heads' peak lr is train.lr times this")
    clip_grad_norm: float | None = Field(
        None,
        gt=0,
        description="clip the gradients' global norm to this before each "
        "optimizer step (after AMP unscaling); null = off; shorthand for the "
        "clip_grad_norm callback",
    )
    compile: bool = Field(
        False,
        description="torch.compile the trained module; where the platform cannot compile: one "
        "log line, then it trains uncompiled",
    )
    accumulate_steps: int = Field(1, ge=1)
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="validate and keep an exponential moving average of the weights; shorthand for the ema callback",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="end the run after this many epochs without "
        "a better score; shorthand for the early_stopping callback",
    )
    time_budget_s: float | None = Field(
        None,
        gt=0,
        description="stop cleanly after a whole epoch when the next one "
        "would pass this many seconds of this call (a Kaggle run limit); --resume "
        "continues; shorthand for the time_budget callback",
    )
    num_workers: Literal["auto"] | int = Field(
        "auto",
        description="DataLoader worker processes; 'auto' = min(cores - 1, 8) on CUDA, 0 on CPU (src.runtime.loader_workers)",
    )
    persistent_workers: bool | None = Field(
        None, description="keep workers between epochs; null = yes when there are workers"
    )
    prefetch_factor: int | None = Field(
        None, ge=1, description="batches queued per worker; null = max(2, 8 // workers)"
    )
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    channels_last: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = torch's default")
    reuse_freed_memory: bool = Field(
        True,
        description="glibc (Linux): freed CPU memory is kept for the next tensors "
        "instead of being returned to the OS and page-faulted in again (src.runtime."
        "reuse_freed_memory; bench's 'C allocator' line); false = glibc's defaults",
    )
    drop_noisy: DropNoisyConfig | None = Field(
        None,
        description="OOF-driven cleaning: leave out the training rows an earlier experiment's OOF contradicts most, "
        "e.g. {experiment: imet-stage1, quantile: 0.05}",
    )
    init_from: str | None = Field(
        None,
        description="staged training: start each run from this experiment's best.pt of the same fold; "
        "shorthand for the init_from callback",
    )
    tensorboard: bool = Field(
        False,
        description="also write TensorBoard event files beside epochs.csv; shorthand for the tensorboard callback",
    )
    loss: LossConfig = LossConfig()
    sampler: SamplerConfig = SamplerConfig()
    callbacks: list[dict[str, Any]] = Field(
        [],
        description="training tricks (src/engine/callbacks/), run in list order: "
        "[{name: <callback>, <option>: <value>, ...}]",
    )

    @field_validator("head_warmup_epochs")
    @classmethod
    def _moved_to_freeze(cls, value: int | None) -> int | None:
        if value:  # 0 / null (as in saved configs) mean nothing and pass
            raise PydanticCustomError(
                "moved",
                "has moved to the freeze callback (one freezing mechanism): write "
                f"train.callbacks: [{{name: freeze, epochs: {value}, rewarm: true}}] instead",
            )
        return None

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise PydanticCustomError("num_workers", "is a number of worker processes (0 or more) or 'auto'")


class AugmentConfig(Section):
    train: list[dict[str, Any]] = [{"name": "HorizontalFlip", "p": 0.5}]
    eval: list[dict[str, Any]] = []
    # null = the pretrained weights' own (timm's pretrained config of model.pretrained), else ImageNet's: the
    # transforms take them from src.weights.normalisation(config), never from these fields directly.
    mean: tuple[float, float, float] | None = Field(
        None, description="per-channel mean; null = model.pretrained's, else ImageNet's"
    )
    std: tuple[float, float, float] | None = Field(
        None, description="per-channel std; null = model.pretrained's, else ImageNet's"
    )


class PredictConfig(Section):
    tta_flip: bool = True
    tta_crops: int = Field(
        1,
        ge=1,
        le=5,
        description="N-crop TTA over a cache larger than image_size: centre, then the corners (top-left, top-right, "
        "bottom-left, bottom-right), probabilities averaged; 1 = the eval crop alone",
    )
    batch_size: int = Field(128, ge=1)


ThresholdMethod = Literal["global", "exact", "optuna", "relative"]


class LabelGroupConfig(Section):
    """Label-count limits within the classes whose names start with `prefix` (iMet: culture:: and tag::)."""

    prefix: str = Field(min_length=1, description="the classes of the group: names starting with this")
    min_labels: int = Field(0, ge=0, description="every image gets at least this many of the group (top ones)")
    max_labels: int | None = Field(None, ge=1, description="and at most this many (the most probable)")


class ThresholdsConfig(Section):
    method: ThresholdMethod = Field("exact", description="the thresholds submit uses (one of `methods`)")
    methods: list[ThresholdMethod] = Field(
        ["global", "exact", "optuna"],
        min_length=1,
        description="the methods tuned and scored (each also 5 times for the honest figure); at iMet size Optuna "
        "takes most of the stage's time",
    )
    optuna_trials: int = Field(200, ge=1)
    storage: str | None = Field(None, description="Optuna storage URL; null = SQLite under oof/<exp>/")
    shrink_strength: float = Field(
        10.0, ge=0, description="pseudo-count pulling rare classes toward the global threshold"
    )
    honest_folds: int = Field(5, ge=2)
    min_labels: int = Field(0, ge=0)
    max_labels: int | None = Field(None, ge=1)
    groups: list[LabelGroupConfig] = Field(
        [], description="label-count limits per label group, applied after the thresholds, before min/max_labels"
    )

    @field_validator("methods")
    @classmethod
    def _each_once(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise PydanticCustomError("methods", "names a method twice; list each once")
        return methods

    @model_validator(mode="after")
    def _chosen_is_tuned(self) -> ThresholdsConfig:
        if self.method not in self.methods:
            raise PydanticCustomError(
                "method",
                "thresholds.method {method} is not among thresholds.methods {methods}; add it there",
                {"method": self.method, "methods": self.methods},
            )
        return self


class SubmitConfig(Section):
    checkpoint: str = Field("full", description="'full' (the --full fit) or 'fold-K': ONE model, never a list")
    message: str = "single model"
    kaggle_competitions: dict[str, str] = Field(
        {},
        description="formats that write one file per head: the competition slug of each head's file, e.g. "
        "{category: <slug>, attributes: <slug>}; single-file formats upload to `competition`",
    )
    score_wait_s: float = Field(
        600, ge=0, description="after an upload: how long to wait for Kaggle's score (0 = look once)"
    )
    score_poll_s: float = Field(15, gt=0, description="seconds between looks at the competition's submissions")

    @field_validator("kaggle_competitions")
    @classmethod
    def _slugs(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [slug for slug in value.values() if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", slug)]
        if bad:
            raise ValueError(f"'{bad[0]}' is not a competition slug (the last part of kaggle.com/competitions/<slug>)")
        return value

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _one_checkpoint(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            raise ValueError(
                "a list of checkpoints is an ensemble, which the one-model rule forbids; name one: 'full' or 'fold-K'"
            )
        if isinstance(value, str) and not (value == "full" or (value.startswith("fold-") and value[5:].isdigit())):
            raise ValueError(f"'{value}' is not 'full' or 'fold-K'")
        return value


class ReportConfig(Section):
    """The `report` stage's PDF."""

    max_pages: int = Field(
        5,
        ge=1,
        le=100,
        description="report.pdf holds at most this many A4 pages (the CelebA course "
        "allows 5): detail is left out, least needed first, until it fits (text never shrinks)",
    )
    font: Literal["dejavu", "arial"] | None = Field(
        None,
        description="report.pdf's typeface: dejavu (DejaVu Sans, embedded) or arial (the PDF's base-14 Helvetica, "
        "which viewers show as Arial; courses that ask for Arial); null = the format's course default",
    )
    font_size: float | None = Field(
        None,
        ge=8,
        le=14,
        description="report.pdf's body text in pt (no text in the PDF is below 8 pt); null = the format's course "
        "default (CelebA: 10, else 8.5)",
    )
    notes: str | None = Field(
        None,
        description="a Markdown file with the student's own discussion, shown as the report's Discussion section "
        "(a path relative to the config file, else to the working directory)",
    )
    compare: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]] = Field(
        default_factory=list,
        description="other experiments of the same output folder to compare with (e.g. the same model trained from "
        "scratch): a table of what their configs set differently, their honest OOF and test scores, and a sentence",
    )


class PackageConfig(Section):
    """The `package` stage: the zip a course asks for (file names, report, code, Readme, notebook)."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the student's name or roll number the course names files after, e.g. "
        "RollNumber_06 (`package --name` overrides it); null = the experiment's name",
    )
    author: str | None = Field(
        None,
        min_length=1,
        max_length=120,
        description="the author line under the report's title (a name or roll number, e.g. RollNumber_06); "
        "null = no author line",
    )
    names: dict[str, str | None] = Field(
        {},
        description="where a piece goes in the zip, over the course's own layout: keys report, notebook, readme, "
        "code, zip, submission (each submission file) or one submission file's name; {name} = the "
        "package name ({name_lower_first} / {name_upper_first}: its first letter lower / upper case), {file} = the "
        "submission file's own name; null leaves the piece out",
    )
    max_weights_mb: float = Field(
        200.0,
        gt=0,
        description="largest trained-weights file (best.pt) the zip may ship for the notebook and the Readme's "
        "predict command; a larger one is refused (a course upload has a size limit)",
    )
    max_test_images_mb: float = Field(
        100.0,
        gt=0,
        description="largest total of test images the zip may ship so its notebook predicts from the zip alone "
        "(only packages with a notebook ship them); more is refused",
    )


_KAGGLE_SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


def _slug_field(min_length: int, description: str) -> Any:
    """An optional Kaggle slug: lower-case words joined by '-', `min_length` to 50 characters."""
    return Field(None, min_length=min_length, max_length=50, pattern=_KAGGLE_SLUG, description=description)


# Kaggle's machine shapes (`kaggle kernels push --accelerator`, kernel-metadata.json's machine_shape): the ones this
# pipeline runs on, with what each machine has, and the ones it refuses, with why (kaggle-cli issues 1151, 1156, 1198).
KAGGLE_ACCELERATORS = {
    "NvidiaTeslaT4": "GPU T4 x2 (Kaggle's default GPU): two 16 GB T4 (sm_75), 4 CPU cores, about 29 GB RAM, 12 h"
}
REFUSED_ACCELERATORS = {
    "NvidiaTeslaP100": "the P100 (sm_60) has no kernels in the torch of Kaggle's current image: its first CUDA "
    "operation fails; use NvidiaTeslaT4",
    "TpuV5E8": "a TPU v5e-8: this pipeline trains with torch on CUDA or the CPU; use NvidiaTeslaT4, or "
    "kaggle.enable_gpu: false for the CPU",
}


class KaggleConfig(Section):
    """Names of the offline kernel and its weights dataset on Kaggle (`kernel` stage); nothing secret goes here."""

    username: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="owner of the kernel and dataset; null = KAGGLE_USERNAME or kaggle.json's username",
    )
    kernel_slug: str | None = _slug_field(5, "null = '<experiment>-inference'")
    kernel_title: str | None = Field(
        None, min_length=5, description="must slugify to kernel_slug; null = the slug with spaces"
    )
    dataset_slug: str | None = _slug_field(6, "weights dataset; null = '<experiment>-weights'")
    dataset_title: str | None = Field(None, min_length=6, max_length=50, description="null = '<experiment> weights'")
    dataset_license: str = Field("CC0-1.0", min_length=1, description="one Kaggle license name, e.g. CC0-1.0")
    enable_gpu: bool = Field(True, description="run the kernel on a GPU machine")
    train_processes: int | None = Field(
        None,
        ge=1,
        description="training kernel: null = one DDP process per visible GPU (both T4s of Kaggle's default machine); "
        "N forces N (gloo on a CPU-only machine, as the local check of the multi-process path does)",
    )
    accelerator: str = Field(
        "NvidiaTeslaT4",
        description="the GPU machine (--accelerator of kaggle kernels push): "
        + ", ".join(f"{name} = {what}" for name, what in KAGGLE_ACCELERATORS.items()),
    )
    session_timeout_s: int | None = Field(
        None,
        ge=60,
        le=43_200,
        description="stop a pushed kernel after this many seconds (kernels push -t); null = Kaggle's limit (12 h)",
    )

    images_per_s: float | None = Field(
        None,
        gt=0,
        description="training images/s of one GPU for `kernel train --plan` (a measured figure); null = the plan's "
        "table for the model and machine, or a short run on `--machine this`",
    )
    poll_s: float = Field(60.0, gt=0, description="`kernel train --follow`: first wait between status polls")
    poll_max_s: float = Field(
        900.0, gt=0, description="`kernel train --follow`: the longest wait between polls (each wait doubles)"
    )

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        if value in REFUSED_ACCELERATORS:
            raise PydanticCustomError("accelerator", REFUSED_ACCELERATORS[value])
        if value not in KAGGLE_ACCELERATORS:
            raise PydanticCustomError(
                "accelerator",
                "is not a Kaggle machine this pipeline runs on; one of {known}",
                {"known": ", ".join(KAGGLE_ACCELERATORS)},
            )
        return value

    wheels: bool = Field(
        True,
        description="ship this environment's versions of the kernel's pure-Python packages "
        "(timm, albumentations, pydantic, ...) as a wheels dataset; the kernel "
        "installs those whose version differs, offline",
    )
    wheels_slug: str | None = _slug_field(6, "wheels dataset; null = '<experiment>-wheels'")
    python_version: str = Field(
        "3.11",
        pattern=r"^3\.\d+$",
        description="the Python of Kaggle's image (major.minor): compiled wheels "
        "(pydantic-core, PyYAML) are shipped only when built for it",
    )


class Config(Section):
    competition: str = Field(description="the Kaggle competition slug")
    format: str = Field(description="a registered format name (one module in src/formats/)")
    format_options: dict[str, Any] = {}
    output_dir: Path = Field(Path("."), description="where oof/, submissions/ and kernels/ live")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    predict: PredictConfig = PredictConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    submit: SubmitConfig = SubmitConfig()
    kaggle: KaggleConfig = KaggleConfig()
    report: ReportConfig = ReportConfig()
    package: PackageConfig = PackageConfig()

    # Set by load_config, not by the YAML: outputs are named after the config file.
    experiment: str = Field("", exclude=True)
    # The `key.path=value` overrides it was loaded with, so "make it first with" hints repeat them.
    overrides: tuple[str, ...] = Field((), exclude=True)

    @model_validator(mode="after")
    def _crops_differ(self) -> Config:
        if self.predict.tta_crops > 1 and self.data.source_is_input:
            raise PydanticCustomError(
                "tta_crops",
                "predict.tta_crops: {n} crops of a {size} px square cache at image_size {size} are all the same image; "
                "set data.cache_size above data.image_size (or data.resize: short_side), or tta_crops: 1",
                {"n": self.predict.tta_crops, "size": self.data.image_size},
            )
        return self


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read `path`, apply `key.path=value` overrides, validate; raise PipelineError naming file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(
            f"{path}: config file not found; pass an existing file, e.g. --config configs/demo-imet.yaml"
        )
    text = path.read_text(encoding="utf-8-sig")
    try:
        raw = load_yaml_bounded(text, path) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: the top level must be a mapping of keys (competition:, format:, data:, ...)")
    override_keys = set()
    for item in overrides:
        override_keys.add(_apply_override(raw, item))
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(_describe_error(exc, path, text, override_keys)) from None
    config.experiment = path.stem
    config.overrides = tuple(overrides)
    return config


MAX_CONFIG_VALUES = 100_000  # a real config has hundreds; YAML aliases can make a few lines mean billions


def load_yaml_bounded(text: str, path: Path) -> Any:
    """yaml.safe_load of `text` (from `path`), refusing a document whose aliases expand past MAX_CONFIG_VALUES."""
    _refuse_alias_bombs(yaml.compose(text), path)
    return yaml.safe_load(text)


def _refuse_alias_bombs(root: yaml.Node | None, path: Path) -> None:
    """Refuse a document whose aliases expand to more than MAX_CONFIG_VALUES values (a 'billion laughs' file):
    counted on the node graph, where an alias is the node it names, so the count itself stays small."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a node that contains itself counts once
            if isinstance(node, yaml.MappingNode):
                sizes[id(node)] = sum(size(key) + size(value) for key, value in node.value)
            elif isinstance(node, yaml.SequenceNode):
                sizes[id(node)] = sum(size(item) for item in node.value)
            else:
                sizes[id(node)] = 1
        return sizes[id(node)]

    if root is not None and size(root) > MAX_CONFIG_VALUES:
        raise PipelineError(
            f"{path}: its YAML aliases expand to {size(root):,} values (more than {MAX_CONFIG_VALUES:,}); "
            "write the values out instead of nesting aliases"
        )


# Settings that differ between machines or copies of the data without changing what is trained.
MACHINE_SETTINGS = frozenset(
    {
        "data.root",
        "data.solution",
        "data.skip_unreadable",
        "data.prebuilt_cache",  # where the same cached pixels lie on this machine
        "train.threads",
        "train.num_workers",
        "train.device",
        "train.tensorboard",
        "train.persistent_workers",
        "train.prefetch_factor",
        "model.weights",
    }
)


def training_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config's (`config_to_dict`, or a run's config.json) training settings as {"section.key": value},
    nested sections flattened ("train.loss.name"), the MACHINE_SETTINGS left out: what two runs are compared on."""
    flat: dict[str, Any] = {}

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}.{key}")
            elif f"{prefix}.{key}" not in MACHINE_SETTINGS:
                flat[f"{prefix}.{key}"] = value

    for section in ("model", "train", "augment", "data"):
        walk(config.get(section) or {}, section)
    return flat


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain data (for saving beside artifacts), a storage URL's password masked: what is
    saved travels (run folders into state datasets, course zips)."""
    data = config.model_dump(mode="json")
    storage = data["thresholds"].get("storage")
    if storage:
        data["thresholds"]["storage"] = re.sub(r"(://[^:/@\s]+:)[^@/\s]+@", r"\1***@", storage)
    return data


def _apply_override(raw: dict, item: str) -> str:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise PipelineError(f"override '{item}': expected key.path=value, e.g. train.epochs=3")
    node = raw
    parts = key.split(".")
    if not all(parts):
        raise PipelineError(f"override '{item}': empty key segment; expected key.path=value, e.g. train.epochs=3")
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        raise PipelineError(
            f"override '{item}': the value is not valid YAML; quote it, e.g. {key}='\"{value}\"'"
        ) from None
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise PipelineError(f"override '{item}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parsed
    return key


def _describe_error(exc: ValidationError, path: Path, text: str, override_keys: set[str]) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if key in override_keys:
        where = f"command-line override {key}"
    else:
        line = _key_lines(text).get(key)
        where = f"{path} line {line}: {key}" if line else f"{path}: {key}"
    if error["type"] == "extra_forbidden":
        parent = error["loc"][:-1]
        known = _known_keys(parent)
        guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known keys here: {', '.join(known)}"
        return f"{where}: unknown key; {hint}"
    if error["type"] == "missing":
        return f"{where}: required key is missing; add it to the config"
    got = error.get("input")
    if isinstance(got, dict):  # a check across keys: its message names them, the whole section adds nothing
        return f"{where.rstrip(': ')}: {error['msg']}"
    return f"{where}: {error['msg']} (got {got!r}); fix the value"


def _known_keys(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [name for name in model.model_fields if name != "experiment"]
    return []


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted key paths to their 1-based line in the YAML text."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key + ".")
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[f"{prefix}{index}"] = item.start_mark.line + 1
                walk(item, f"{prefix}{index}.")

    walk(root, "")
    return lines
