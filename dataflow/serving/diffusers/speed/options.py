"""Speed and memory options for the diffusers editing pipelines (measured on FLUX.1 Kontext).

Which options apply depends on the model family (``dataflow.serving.diffusers``): the FLUX.1 block rewrites (split
output projection, fused GELU) only to FLUX.1 Kontext, fused QKV to the FLUX families, FP8 linears, the attention
backend, regional compilation, the first-block cache and offloading to every family; FP8 attention to FLUX.1 Kontext,
FLUX.2 and Qwen-Image-Edit, cache-dit's step cache to FLUX.1 Kontext. An option that does not apply is skipped with a log line,
except the lossy ones asked for where they cannot run (FP8 attention off an FP8 GPU, the step cache on another
family): those are refused, so that a run's fingerprint never claims an option that was not applied.

Lossless (on by default on CUDA, where they help): fused QKV projections, the cuDNN attention backend, regional
compilation of the repeated transformer blocks, the MLP's GELU in the GEMM epilogue and the single-stream blocks'
output projection split in two (these two not with offloading, where they are unmeasured). Lossless, opt-in because
they compile again for every new image size and lengthen the first call, for a few percent per image
(docs/performance.md): the whole transformer compiled and replayed as CUDA graphs, the VAE compiled. Lossy
(opt-in): FP8 linear layers in the transformer blocks, FP8 attention (``fp8_attention``), diffusers' first-block
cache, and cache-dit's DBCache (``step_cache``). Memory (opt-in, for smaller GPUs): model CPU offload, group offload.

Compilation is off by default with the first-block cache and with group offload: both wrap every block in a hook
that ``fullgraph`` compilation cannot trace (the cache's decision is a ``torch.compiler.disable``d function, the
offload hook moves weights between devices). Asked for explicitly, they compile with graph breaks allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from dataflow.core.errors import InputError
from dataflow.core.flags import flag_adder, flag_name
from dataflow.logger import get_logger
from dataflow.serving.diffusers.speed.step_cache import PRESETS as CACHE_PRESETS
from dataflow.serving.diffusers.speed.step_cache import describe as describe_cache
from dataflow.serving.diffusers.speed.step_cache import (
    missing_reason as cache_missing_reason,
)
from dataflow.serving.diffusers.speed.step_cache import parse_cache

logger = get_logger()

OFFLOAD_MODES = ("model", "group")
FP8_SCALINGS = ("tensorwise", "rowwise")
DEFAULT_FP8_SCALING = "rowwise"  # faster and more accurate than tensorwise in the committed runs (performance.md)
FP8_ATTENTION_KERNELS = ("triton", "cudnn")
# The Triton kernel stays the default until a committed GPU run shows the whole pipeline faster on cuDNN's (whose
# kernel alone measured faster, performance.md); then the Triton kernel goes.
DEFAULT_FP8_ATTENTION_KERNEL = "triton"
# Inductor options for ``tune_kernels``: benchmark neighbouring launch configurations of each generated kernel.
KERNEL_TUNING = {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True}
# The families cache-dit's step cache is wired and tested for: FLUX.1 Kontext makes one transformer call per step.
# Qwen-Image-Edit's true CFG makes two, which cache-dit would have to count apart (its enable_separate_cfg).
STEP_CACHE_FAMILIES = ("FLUX-Kontext",)
# The families whose attention FP8 attention is wired and tested for: their transformer calls SDPA without a mask
# (Qwen-Image-Edit since its one-prompt calls drop the all-ones text mask).
FP8_ATTENTION_FAMILIES = ("FLUX-Kontext", "FLUX.2", "Qwen-Image-Edit")
# Attention backends that end in torch's scaled_dot_product_attention, the call FP8 attention replaces.
SDPA_BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math")


@dataclass(frozen=True)
class Acceleration:
    """Which speedups to apply.

    Args:
        fuse_qkv: fuse the query/key/value projections into one GEMM (None: on CUDA).
        compile: ``compile_repeated_blocks(fullgraph=True)``: compiles one block and reuses it, a fraction of the
            whole model's compile time (None: on CUDA, unless the first-block cache or group offload is on).
        attention_backend: a diffusers attention backend, e.g. "_native_cudnn" (None: cuDNN on CUDA, else the
            default SDPA).
        tune_kernels: coordinate-descent tuning of the compiled kernels' launch configurations: a longer compile,
            the same arithmetic.
        fuse_gelu: compute each MLP's first linear and its tanh GELU in one cuBLASLt call (``fused_gelu``; None:
            on CUDA without offloading or FP8).
        split_proj_out: in the single-stream blocks, project the attention and MLP parts with their halves of
            ``proj_out`` instead of concatenating them first (``single_block``; None: on CUDA without offloading).
        cuda_graphs: compile the whole transformer instead of its blocks and replay each step as CUDA graphs,
            which removes the launch gaps between kernels: a little faster per image, a longer first call.
            Recompiles for each new image size; no offloading or first-block cache.
        compile_vae: compile the VAE's encoder and decoder (one reference encode and one decode per image): a
            little less per image, a longer first call, and a recompile per new image size.
        fp8: FP8 linear layers in the transformer blocks (lossy; NVIDIA GPUs with FP8 support): True for the
            default scaling, or "tensorwise" / "rowwise" (one scale per token and output channel).
        first_block_cache: diffusers' first-block cache threshold, e.g. 0.08 (lossy; None: off). Steps whose
            first-block residual changes less than this skip the remaining blocks.
        fp8_attention: attention in FP8 with a smoothed K (``fp8_attention``; lossy): True for the default kernel,
            or "triton" (per-block scales; NVIDIA GPUs of compute capability 8.9+) or "cudnn" (cuDNN's FP8 SDPA, one
            scale per tensor; compute capability 9.0+ and nvidia-cudnn-frontend). Refused where it cannot run.
        cache: cache-dit's DBCache, "dbcache" or "dbcache:PRESET" (``step_cache.PRESETS``; lossy; needs
            cache-dit; None: off).
        offload: "model" (``enable_model_cpu_offload``) or "group" (block-level group offload with a CUDA stream)
            to fit smaller GPUs, at a cost in speed (None: the whole pipeline on the device).
    """

    fuse_qkv: Optional[bool] = None
    compile: Optional[bool] = None
    attention_backend: Optional[str] = None
    tune_kernels: bool = False
    fuse_gelu: Optional[bool] = None
    split_proj_out: Optional[bool] = None
    cuda_graphs: bool = False
    compile_vae: bool = False
    fp8: Union[bool, str] = False
    first_block_cache: Optional[float] = None
    offload: Optional[str] = None
    fp8_attention: Union[bool, str] = False
    cache: Optional[str] = None

    def __post_init__(self) -> None:
        if self.offload not in (None, *OFFLOAD_MODES):
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)} or None, got {self.offload!r}")
        if self.fp8 not in (False, True, *FP8_SCALINGS):
            raise InputError(f"fp8 must be True, False or one of {', '.join(FP8_SCALINGS)}, got {self.fp8!r}")
        if not isinstance(self.fp8, str):
            object.__setattr__(self, "fp8", bool(self.fp8))  # 0 and 1 pass the check above
        if self.first_block_cache is not None and not 0 < self.first_block_cache < 1:
            raise InputError(f"first_block_cache is a threshold in (0, 1), got {self.first_block_cache!r}")
        if self.fp8_attention not in (False, True, *FP8_ATTENTION_KERNELS):
            raise InputError(f"fp8_attention must be True, False or one of {', '.join(FP8_ATTENTION_KERNELS)}, got "
                             f"{self.fp8_attention!r}")
        if not isinstance(self.fp8_attention, str):
            object.__setattr__(self, "fp8_attention", bool(self.fp8_attention))
        if self.cache is not None:
            self._check_cache()
        if self.fp8_attention and self.attention_backend not in (None, *SDPA_BACKENDS):
            raise InputError(f"fp8_attention replaces torch's scaled_dot_product_attention, which attention_backend="
                             f"{self.attention_backend!r} does not call; use one of {', '.join(SDPA_BACKENDS)} or None")
        if self.cuda_graphs:
            clash = ("offload" if self.offload else "first_block_cache" if self.first_block_cache is not None
                     else "cache" if self.cache else "compile=False" if self.compile is False else None)
            if clash:
                raise InputError(f"cuda_graphs cannot be combined with {clash}: CUDA graphs replay a fixed compiled "
                                 "step, and that option moves weights, skips blocks, or turns compilation off")

    def _check_cache(self) -> None:
        """The step cache's spec, made canonical; refused early when it is unknown, cache-dit is missing, or
        another option hooks the same blocks."""
        object.__setattr__(self, "cache", parse_cache(self.cache))
        if self.first_block_cache is not None:
            raise InputError("cache and first_block_cache are two step caches over the same blocks; choose one")
        if self.offload == "group":
            raise InputError("cache does not work with offload='group': cache-dit wraps the blocks that group "
                             "offload moves; use offload='model' or no offload")
        missing = cache_missing_reason()
        if missing:
            raise InputError(missing)

    @classmethod
    def from_flags(cls, args: Any) -> "Acceleration":
        """From the flags ``add_acceleration_flags`` defines, as parsed."""
        return cls(fp8=args.fp8_scaling or args.fp8, first_block_cache=args.first_block_cache, offload=args.offload,
                   compile=False if args.no_compile else None, tune_kernels=args.tune_kernels,
                   fuse_gelu=args.fuse_gelu, split_proj_out=args.split_proj_out, cuda_graphs=args.cuda_graphs,
                   compile_vae=args.compile_vae, fp8_attention=args.fp8_attention_kernel or args.fp8_attention,
                   cache=args.cache)

    def lossy(self) -> dict:
        """The options that change output pixels beyond float rounding; they belong in a run's fingerprint.

        FP8 attention and the step cache appear only when on, so that runs made before they existed keep their
        fingerprint and resume: FP8 attention as True on the Triton kernel (as before cuDNN's existed), else by its
        kernel's name. The cache is recorded with the settings its preset stands for.
        """
        lossy: dict = {"fp8": self.fp8_scaling or False, "first_block_cache": self.first_block_cache}
        if self.fp8_attention_kernel:
            lossy["fp8_attention"] = True if self.fp8_attention_kernel == "triton" else self.fp8_attention_kernel
        if self.cache:
            lossy["cache"] = describe_cache(self.cache)
        return lossy

    @property
    def fp8_scaling(self) -> Optional[str]:
        """The FP8 scaling in use, or None when the linears stay in bf16."""
        if self.fp8 is False:
            return None
        return DEFAULT_FP8_SCALING if self.fp8 is True else self.fp8

    @property
    def fp8_attention_kernel(self) -> Optional[str]:
        """The FP8 attention kernel in use ("triton" or "cudnn"), or None when attention stays in bf16."""
        if self.fp8_attention is False:
            return None
        return DEFAULT_FP8_ATTENTION_KERNEL if self.fp8_attention is True else self.fp8_attention

    def rewrites(self, cuda: bool) -> dict:
        """Which layer rewrites apply: the fused QKV projections (default: on CUDA), the split output projection
        and the GELU epilogue (default: on CUDA without offloading, the only setting they were measured in; the
        epilogue also not with FP8, whose layers take those linears and fuse the GELU into their quantization)."""
        plain_cuda = cuda and self.offload is None
        return {"fuse_qkv": _enabled(self.fuse_qkv, cuda),
                "split_proj_out": _enabled(self.split_proj_out, plain_cuda),
                "fuse_gelu": _enabled(self.fuse_gelu, plain_cuda and not self.fp8_scaling)}

    def compile_plan(self, cuda: bool) -> Optional[dict]:
        """How to compile the transformer, or None not to.

        ``scope`` is "blocks" (``compile_repeated_blocks``) or, with ``cuda_graphs``, "transformer" (its whole
        forward); the other keys are ``torch.compile`` keyword arguments. By default: on CUDA, except with the
        first-block cache or group offload, whose per-block hooks break ``fullgraph`` tracing. Forced on with
        either, the blocks compile with graph breaks allowed.
        """
        hooked = self.first_block_cache is not None or self.offload == "group"
        if not _enabled(self.compile, cuda and not hooked):
            return None
        plan: dict = {"scope": "blocks", "fullgraph": not hooked}
        if self.cuda_graphs:
            plan.update(scope="transformer", mode="reduce-overhead")
        if self.tune_kernels:
            plan["options"] = dict(KERNEL_TUNING)
        return plan


def add_acceleration_flags(parser: Any, separator: str = "-") -> None:
    """The speed flags, spelled ``--first-block-cache`` (the CLI) or ``--first_block_cache`` (``separator="_"``, the
    seed script); ``Acceleration.from_flags`` reads them back."""
    add = flag_adder(parser, separator)
    add("fp8", action="store_true", help="FP8 linear layers (lossy, faster on Hopper-class GPUs)")
    add("fp8_scaling", choices=FP8_SCALINGS, default=None,
        help="FP8 scales per tensor or per row (token and output channel); implies --fp8")
    add("first_block_cache", type=float, default=None, metavar="T",
        help="skip the remaining blocks when the first block's residual changes less than T, e.g. 0.08 (lossy)")
    add("fp8_attention", action="store_true",
        help="attention in FP8 with a smoothed K (lossy; NVIDIA GPUs of compute capability 8.9+)")
    add("fp8_attention_kernel", choices=FP8_ATTENTION_KERNELS, default=None,
        help="which FP8 attention: triton (per-block scales, the default) or cudnn (cuDNN's FP8 SDPA, Hopper+, needs "
             f"nvidia-cudnn-frontend); implies {flag_name('fp8_attention', separator)}")
    add("cache", default=None, metavar="dbcache[:PRESET]",
        help=f"cache-dit's DBCache step cache (lossy; needs cache-dit); PRESET: {', '.join(CACHE_PRESETS)} "
             "(default balanced; static-*: a fixed schedule)")
    add("offload", choices=OFFLOAD_MODES, default=None, help="fit smaller GPUs: model or group CPU offload")
    add("no_compile", action="store_true", help="skip regional torch.compile (saves ~20 s start-up)")
    add("tune_kernels", action="store_true",
        help="coordinate-descent tuning of the compiled kernels (longer start-up, lossless)")
    def switch(name: str, help: str, default: str) -> None:  # --name / --no-name; neither given: None, the default
        add(name, action="store_true", default=None, help=f"{help} (lossless; default: {default})")
        add("no_" + name, dest=name, action="store_false", help=f"turn {flag_name(name, separator)} off")

    switch("fuse_gelu", "each MLP's linear and GELU in one cuBLASLt call", "on CUDA without offloading or FP8")
    switch("split_proj_out", "single-stream blocks project attention and MLP separately instead of concatenating",
           "on CUDA without offloading")
    add("cuda_graphs", action="store_true",
        help="compile the whole transformer and replay its steps as CUDA graphs (lossless; recompiles per size)")
    add("compile_vae", action="store_true", help="compile the VAE encoder and decoder (lossless)")


def _enabled(choice: Optional[bool], cuda: bool) -> bool:
    return cuda if choice is None else choice
