"""LoRA adapters for the diffusers editing families: which file, whether it fits the model, and baked in.

A LoRA is named by a local ``.safetensors`` file, a local folder holding one, or a Hub repository (with the file
inside it), each with a scale: ``PATH_OR_ID[@FILE][:SCALE]`` on the command line. Loading goes through diffusers'
public LoRA API (``load_lora_weights``, which also converts the kohya / ComfyUI / ai-toolkit key formats diffusers
knows for the family), then ``set_adapters`` with the scales, ``fuse_lora`` and ``unload_lora_weights``: the deltas
are added to the base weights and the adapter layers removed, so the model costs what the base model costs and
the speed options (FP8, compilation) see plain linear layers. ``DiffusersEditServing`` does this before them.

diffusers loads a LoRA that fits nothing without a word (a key format it does not convert for this family), loads
a LoRA of another family where the layer names and sizes happen to agree (FLUX.1, Qwen-Image and FLUX.2 [klein]
4B share ``transformer_blocks.N.attn.to_q`` at 3072 features), and picks the first file of a folder that holds
several. So before loading, each file is checked here: family-only key names, then diffusers' own conversion
compared layer by layer (names and sizes) with the model. Each problem is one line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.io.model_source import download_file, hub_revision, list_repo_files, looks_like_path
from dataflow.logger import get_logger

logger = get_logger()

WEIGHT_SUFFIX = ".safetensors"
MIN_PEFT = "0.17.0"  # diffusers' MIN_PEFT_VERSION
ADAPTER_PREFIX = "lora_"  # adapter names lora_00, lora_01...: diffusers matches keys by substring, so no short names

# Key names that only one family's transformer has, in any of the formats diffusers converts (dots and
# underscores read alike). Names all families share (attn.to_q ...) decide nothing.
SIGNATURES = {
    "FLUX.1": re.compile(r"single_transformer_blocks_\d+_(proj_mlp|proj_out|norm_linear|attn_to_[qkv]_)"
                         r"|transformer_blocks_\d+_ff(_context)?_net_|norm1(_context)?_linear"
                         r"|double_blocks_\d+_(img|txt)_mod_lin|single_blocks_\d+_modulation_lin"),
    "FLUX.2": re.compile(r"to_qkv_mlp_proj|_ff(_context)?_linear_(in|out)|(double|single)_stream_modulation"),
    "Qwen-Image": re.compile(r"transformer_blocks_\d+_(img|txt)_(mlp|mod)_"),
    "Stable Diffusion": re.compile(r"(down|up|mid)_blocks?_\d+_(attentions|resnets)|lora_te\d?_text_model"),
}


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA as the caller names it.

    Args:
        source: a local ``.safetensors`` file, a local folder, or a Hub repository id (``owner/name``).
        weight_name: the file inside a folder or repository (may include a subfolder); None: its only one.
        scale: how much of the LoRA is added (0: none of it).
    """

    source: str
    weight_name: Optional[str] = None
    scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source:
            raise InputError(f"a LoRA needs a file, folder or Hub id, got {self.source!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise InputError(f"LoRA {self.source}: the scale must be a number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def name(self) -> str:
        """``source`` or ``source@weight_name``: how messages name it."""
        return f"{self.source}@{self.weight_name}" if self.weight_name else self.source

    def same_file(self, other: "LoraSpec") -> bool:
        return (self.source, self.weight_name) == (other.source, other.weight_name)


def parse_lora(text: str) -> LoraSpec:
    """``PATH_OR_ID[@FILE][:SCALE]``: ``style.safetensors:0.8``, ``owner/repo@sub/file.safetensors``.

    A trailing ``:NUMBER`` is the scale; an existing local path is taken whole (names with ``@`` or ``:`` in them).
    """
    text = text.strip()
    source, scale = text, 1.0
    head, colon, tail = text.rpartition(":")
    if colon and head and not os.path.exists(os.path.expanduser(text)):
        try:
            scale = float(tail)
        except ValueError:
            pass
        else:
            source = head
    weight_name = None
    if "@" in source and not os.path.exists(os.path.expanduser(source)):
        source, _, weight_name = source.rpartition("@")
        if not source or not weight_name:
            raise InputError(f"--lora {text}: give it as PATH_OR_ID[@FILE][:SCALE]")
    return LoraSpec(source, weight_name, scale)


def lora_specs(value: Any) -> list[LoraSpec]:
    """The LoRAs of a ``lora=`` argument: None, one or a list of ``"PATH_OR_ID[@FILE][:SCALE]"`` strings, paths,
    ``LoraSpec``s or dicts ``{"source", "weight_name", "scale"}``."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    specs = []
    for item in items:
        if isinstance(item, LoraSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(parse_lora(item))
        elif isinstance(item, os.PathLike):  # a path object is a path, never a name with a scale
            specs.append(LoraSpec(os.fspath(item)))
        elif isinstance(item, dict):
            unknown = set(item) - {"source", "weight_name", "scale"}
            if unknown or "source" not in item:
                raise InputError(f"a LoRA given as a dict takes source, weight_name and scale; got {sorted(item)}")
            specs.append(LoraSpec(item["source"], item.get("weight_name"), item.get("scale", 1.0)))
        else:
            raise InputError(f"lora takes 'PATH_OR_ID[@FILE][:SCALE]' strings, got {item!r}")
    return specs


def merge_loras(base: Sequence[LoraSpec], given: Sequence[LoraSpec]) -> list[LoraSpec]:
    """A recipe's LoRAs with the caller's: a caller's LoRA of the same file replaces the recipe's (its scale wins),
    the others are added after them."""
    merged = [next((g for g in given if g.same_file(b)), b) for b in base]
    return merged + [g for g in given if not any(g.same_file(b) for b in base)]


# -- finding the file -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedLora:
    """A LoRA's local weights file and what identifies its content in a run's fingerprint."""

    spec: LoraSpec
    path: str
    identity: tuple  # (("sha256", ...),) for local files; (("repo", ...), ("file", ...), ("revision", ...)) for Hub

    def fingerprint(self) -> dict:
        return {**dict(self.identity), "scale": self.spec.scale}


def is_local(spec: LoraSpec) -> bool:
    """Local unless it reads as an ``owner/name`` Hub id that is not a path here (nor a ``.safetensors`` name)."""
    path = os.path.expanduser(spec.source)
    return os.path.exists(path) or looks_like_path(spec.source) or spec.source.endswith(WEIGHT_SUFFIX)


def local_weights_file(spec: LoraSpec) -> str:
    """The weights file of a local LoRA; ``InputError`` naming it when it is missing or ambiguous."""
    path = os.path.expanduser(spec.source)
    if os.path.isfile(path):
        if spec.weight_name:
            raise InputError(f"LoRA {spec.source} is a file; @{spec.weight_name} names a file inside a folder or "
                             "Hub repository")
        return _check_suffix(path)
    if not os.path.isdir(path):
        raise InputError(f"LoRA file not found: {spec.source}")
    if spec.weight_name:
        file = os.path.join(path, spec.weight_name)
        if not os.path.isfile(file):
            raise InputError(f"LoRA folder {spec.source} has no file {spec.weight_name}")
        return _check_suffix(file)
    return os.path.join(path, _only_weights_file(spec, sorted(os.listdir(path)), "folder"))


def _only_weights_file(spec: LoraSpec, names: Iterable[str], where: str) -> str:
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIX)]
    if len(weights) == 1:
        return weights[0]
    if not weights:
        raise InputError(f"LoRA {where} {spec.source} holds no {WEIGHT_SUFFIX} file")
    raise InputError(f"LoRA {where} {spec.source} holds {len(weights)} weight files ({', '.join(weights)}); name "
                     f"one: --lora {spec.source}@{weights[0]}")


def _check_suffix(path: str) -> str:
    if not path.endswith(WEIGHT_SUFFIX):
        raise InputError(f"LoRA {path}: only {WEIGHT_SUFFIX} files are read (pickled .bin/.pt files can run code)")
    return path


def resolve_lora(spec: LoraSpec, cache_dir: Optional[str] = None, local_dir: Optional[str] = None) -> ResolvedLora:
    """The local file of ``spec`` (a Hub file is downloaded like a model: into ``local_dir/<repo name>``, else the
    Hub cache) and its identity: the SHA-256 of a local file, or repo + revision + file for a Hub download."""
    if is_local(spec):
        path = local_weights_file(spec)
        return ResolvedLora(spec, path, (("sha256", file_sha256(path)),))
    weight_name = spec.weight_name
    if weight_name is None:
        files = [f for f in list_repo_files(spec.source) if "/" not in f]
        weight_name = _only_weights_file(spec, files, "repository")
    _check_suffix(weight_name)
    path = download_file(spec.source, weight_name, cache_dir, local_dir)
    revision = hub_revision(path)
    content = ("revision", revision) if revision else ("sha256", file_sha256(path))
    return ResolvedLora(spec, path, (("repo", spec.source), ("file", weight_name), content))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


# -- checking that it fits ------------------------------------------------------------------------------
def require_peft() -> None:
    """``ModelLoadError`` saying what to install when peft (which diffusers loads LoRAs with) is missing or old.

    Checked without importing it, so a run with LoRAs fails before any model loads."""
    import importlib.metadata
    import importlib.util

    from packaging.version import Version

    try:
        found = importlib.util.find_spec("peft") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ModelLoadError(f"LoRA adapters need peft>={MIN_PEFT}: pip install 'dataflow-edit[diffusers]' "
                             "(or pip install peft)")
    version = importlib.metadata.version("peft")
    if Version(version) < Version(MIN_PEFT):
        raise ModelLoadError(f"LoRA adapters need peft>={MIN_PEFT}, this is {version}: pip install -U peft")


def lora_keys(path: str) -> list[str]:
    """The tensor names of a ``.safetensors`` file, read from its header (no weights)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:
        raise ModelLoadError(f"LoRA {path} is not a readable safetensors file ({exc})") from None


def target_family(keys: Iterable[str]) -> dict[str, str]:
    """The families whose own layer names occur in ``keys``: {family: an example key}."""
    found: dict[str, str] = {}
    for key in keys:
        flat = key.lower().replace(".", "_")
        for family, pattern in SIGNATURES.items():
            if family not in found and pattern.search(flat):
                found[family] = key
    return found


@dataclass
class LoraFit:
    """How a LoRA's layers (after diffusers' key conversion) meet the model's."""

    matched: list  # (component, module)
    missing: list  # (component, module): no such layer
    mismatched: list  # (component, module, LoRA (in, out), model (in, out))
    ignored: list  # keys for no component diffusers loads LoRAs into

    @property
    def components(self) -> list[str]:
        return sorted({component for component, _ in self.matched})


def check_family(path: str, keys: Sequence[str], family: Any) -> None:
    """Refuse a LoRA whose key names belong to another family only (``InputError`` naming both)."""
    found = target_family(keys)
    if not found or family.lora_family in found:
        return
    other, example = next(iter(found.items()))
    raise InputError(f"LoRA {path} targets {other} (keys such as '{example}'), the model is {family.describe()}; "
                     f"use a LoRA made for {family.lora_family}")


def lora_fit(pipe: Any, path: str) -> LoraFit:
    """Compare the LoRA's layers, as diffusers converts them for this pipeline, with the pipeline's layers."""
    try:
        with quiet_diffusers():
            loaded = type(pipe).lora_state_dict(path)
    except Exception as exc:
        raise ModelLoadError(f"LoRA {path}: diffusers cannot read it for a {type(pipe).__name__} "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
    state = loaded[0] if isinstance(loaded, tuple) else loaded
    components = {name: getattr(pipe, name) for name in type(pipe)._lora_loadable_modules
                  if getattr(pipe, name, None) is not None}
    shapes: dict[tuple, dict] = {}
    ignored = []
    for key, value in state.items():
        component, _, rest = key.partition(".")
        module, part = _lora_module(rest)
        if component not in components or module is None:
            ignored.append(key)
            continue
        shapes.setdefault((component, module), {})[part] = tuple(getattr(value, "shape", ()))
    fit = LoraFit([], [], [], ignored)
    modules = {name: dict(model.named_modules()) for name, model in components.items()}
    for (component, name), parts in sorted(shapes.items()):
        layer = modules[component].get(name)
        if layer is None:
            fit.missing.append((component, name))
            continue
        expected = (getattr(layer, "in_features", None), getattr(layer, "out_features", None))
        got = (parts["A"][-1] if len(parts.get("A", ())) == 2 else expected[0],
               parts["B"][0] if len(parts.get("B", ())) == 2 else expected[1])
        if None in expected or got == expected:
            fit.matched.append((component, name))
        else:
            fit.mismatched.append((component, name, got, expected))
    return fit


def _lora_module(key: str) -> tuple[Optional[str], str]:
    """(module name, "A" / "B" / "") of a converted LoRA key such as ``blocks.0.attn.to_q.lora_A.weight``."""
    for marker, part in ((".lora_A.", "A"), (".lora_B.", "B"), (".lora_magnitude_vector", ""), (".lokr_", "")):
        if marker in key:
            return key.split(marker)[0], part
    return None, ""


def check_fit(path: str, fit: LoraFit, family: Any) -> None:
    """``InputError`` when nothing of the LoRA fits, or layers have other sizes; a warning with the count when
    some layers match nothing."""
    model = family.describe()
    layers = len(fit.matched) + len(fit.missing) + len(fit.mismatched)
    if fit.mismatched:
        component, name, got, expected = fit.mismatched[0]
        raise InputError(f"LoRA {path}: {len(fit.mismatched)} of its {layers} layers have other sizes than "
                         f"{model}'s ({name}: {got[0]} -> {got[1]} features, the model's {expected[0]} -> "
                         f"{expected[1]}); it was made for another model or model size")
    if not fit.matched:
        example = fit.missing[0][1] if fit.missing else (fit.ignored[0] if fit.ignored else "none")
        raise InputError(f"LoRA {path}: none of its layers is a layer of {model} (keys such as '{example}'); it is "
                         f"for another model, or in a key format diffusers does not convert for {family.display_name}")
    if len(fit.missing) >= len(fit.matched):  # a LoRA of another model whose shared layer names happen to fit
        raise InputError(f"LoRA {path}: only {len(fit.matched)} of its {layers} layers are layers of {model} (it "
                         f"also has '{fit.missing[0][1]}'); it was made for another model")
    if fit.missing:
        logger.warning("LoRA %s: %d of its %d layers match no layer of %s and are left out (such as '%s')", path,
                       len(fit.missing), layers, model, fit.missing[0][1])
    if fit.ignored:
        logger.warning("LoRA %s: %d of its keys are for no part of %s that diffusers loads LoRAs into and are left "
                       "out (such as '%s')", path, len(fit.ignored), model, fit.ignored[0])


# -- loading and baking in ------------------------------------------------------------------------------
def apply_loras(pipe: Any, loras: Sequence[ResolvedLora], family: Any, fuse: bool = True) -> list[str]:
    """Load ``loras`` into ``pipe`` with their scales; with ``fuse``, add them into the weights and remove the
    adapter layers (``fuse_lora``, ``unload_lora_weights``). Returns a description of each, for the log."""
    if not loras:
        return []
    if not hasattr(pipe, "load_lora_weights"):  # LongCat-Image-Edit and JoyAI-Image-Edit in diffusers 0.42.1
        raise InputError(f"{family.describe()} takes no LoRA: its diffusers pipeline ({type(pipe).__name__}) has no "
                         "LoRA loader; run without --lora (or a recipe with LoRAs)")
    require_peft()
    names, components, described = [], set(), []
    for i, lora in enumerate(loras):
        check_family(lora.path, lora_keys(lora.path), family)
        fit = lora_fit(pipe, lora.path)
        check_fit(lora.path, fit, family)
        name = f"{ADAPTER_PREFIX}{i:02d}"
        try:
            with quiet_diffusers():
                pipe.load_lora_weights(lora.path, adapter_name=name)
        except Exception as exc:
            raise ModelLoadError(f"LoRA {lora.path} could not be loaded into {family.describe()} "
                                 f"({type(exc).__name__}: {_first_line(exc)})") from None
        names.append(name)
        components.update(fit.components)
        described.append(f"{lora.spec.name} x{lora.spec.scale:g} ({len(fit.matched)} layers)")
    pipe.set_adapters(names, [lora.spec.scale for lora in loras])
    if fuse:
        pipe.fuse_lora(components=sorted(components), adapter_names=names)
        pipe.unload_lora_weights()
    return described


class _DropRecords(logging.Filter):
    """Drops diffusers' log lines about LoRA keys that ``check_fit`` reports itself, in one line with a count."""

    PREFIXES = ("No LoRA keys associated to", "Loading adapter weights from state_dict led to")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.PREFIXES)


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Leave out diffusers' and peft's per-key LoRA messages for the duration (our checks count them)."""
    drop = _DropRecords()
    loggers = [logging.getLogger(name) for name in ("diffusers.loaders.peft", "diffusers.utils.peft_utils")]
    for item in loggers:
        item.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*While injecting the PEFT adapters.*")
            warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute.*")  # 2nd LoRA
            yield
    finally:
        for item in loggers:
            item.removeFilter(drop)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
