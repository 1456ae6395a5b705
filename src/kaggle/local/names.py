"""What an experiment's kernels and datasets are called on Kaggle, and who owns them.

Slugs and titles come from the config's `kaggle:` section, else from the experiment's name; the owner from
`kaggle.username`, KAGGLE_USERNAME or kaggle.json (its user name only, never the key).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from src.artifacts import Experiment
from src.errors import PipelineError
from src.kaggle.local import cli


@dataclass(frozen=True)
class KaggleNames:
    """Who owns the kernel and dataset, and what they are called on Kaggle."""

    username: str
    kernel_slug: str
    kernel_title: str
    dataset_slug: str
    dataset_title: str
    wheels_slug: str = ""

    def ref(self, slug: str) -> str:
        """owner/slug on Kaggle of one of this experiment's kernels or datasets."""
        return f"{self.username}/{slug}"

    kernel_ref = property(lambda self: self.ref(self.kernel_slug))
    dataset_ref = property(lambda self: self.ref(self.dataset_slug))
    wheels_ref = property(lambda self: self.ref(self.wheels_slug))

    @property
    def code_file(self) -> str:
        return f"{self.kernel_slug}.py"


UNKNOWN_OWNER = "your-kaggle-username"  # a build without a username names this owner; nothing is pushed under it


def kaggle_names(exp: Experiment, pushing: bool = True) -> KaggleNames:
    """Kernel and dataset names from the config's `kaggle:` section, defaults derived from the experiment. Without
    a username a build (`pushing` False) names the owner UNKNOWN_OWNER; anything that talks to Kaggle refuses."""
    settings = exp.config.kaggle
    username = settings.username or username_from_credentials() or (None if pushing else UNKNOWN_OWNER)
    if not username:
        raise PipelineError(
            f"{exp.config_path}: no Kaggle username: set kaggle.username (the owner of the kernel "
            "and weights dataset), or KAGGLE_USERNAME, or save kaggle.json in ~/.kaggle"
        )
    base = re.sub(r"[^a-z0-9]+", "-", exp.name.lower()).strip("-") or "model"
    if not cli._REF.match(f"{username}/x"):
        raise PipelineError(
            f"Kaggle username {username!r} is not a user name: set kaggle.username in {exp.config_path}"
        )
    kernel_slug = settings.kernel_slug or f"{base[:40].rstrip('-')}-inference"
    dataset_slug = settings.dataset_slug or f"{base[:42].rstrip('-')}-weights"
    wheels_slug = settings.wheels_slug or f"{base[:43].rstrip('-')}-wheels"
    kernel_title = settings.kernel_title or kernel_slug.replace("-", " ")
    if _slugify(kernel_title) != kernel_slug:
        raise PipelineError(
            f"{exp.config_path}: kaggle.kernel_title '{kernel_title}' would give the kernel the URL slug "
            f"'{_slugify(kernel_title)}', not '{kernel_slug}': make the title match the slug or drop it"
        )
    dataset_title = settings.dataset_title or f"{exp.name[:42]} weights"
    dataset_title = dataset_title if len(dataset_title) >= 6 else f"{dataset_title} model"
    return KaggleNames(username, kernel_slug, kernel_title, dataset_slug, dataset_title, wheels_slug)


def machine_metadata(kaggle_config) -> dict:
    """kernel-metadata.json's machine: GPU on or off and, with a GPU, the machine shape (`kaggle.accelerator`; without
    it Kaggle gives a push the P100, which the image's torch cannot run)."""
    gpu = kaggle_config.enable_gpu
    return {"enable_gpu": gpu, "enable_tpu": False, **({"machine_shape": kaggle_config.accelerator} if gpu else {})}


def _slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def username_from_credentials() -> str:
    """The account name only (never the key): KAGGLE_USERNAME, else `username` in kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    for folder in cli._config_dirs():
        username = cli._read_json(folder / "kaggle.json").get("username")
        if isinstance(username, str) and username:
            return username
    return ""
