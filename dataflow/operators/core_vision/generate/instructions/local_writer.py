"""``LocalWriter``: instructions from a local VLM run with ``transformers`` (Qwen2.5-VL, LLaVA ... any
image-text-to-text model whose processor has a chat template), loaded as the local judge loads its model."""

from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

from dataflow.core.errors import ModelLoadError
from dataflow.core.validation import check_positive_int
from dataflow.logger import get_logger
from dataflow.operators.core_vision.eval.metrics.hf_model import (
    LazyModel,
    check_model_name,
    default_device,
    dtype_option,
    import_torch_transformers,
    load_pretrained,
)
from dataflow.operators.core_vision.generate.instructions.api_writer import prompt_for, shrunk
from dataflow.operators.core_vision.generate.instructions.prompts import prompt_version
from dataflow.operators.core_vision.generate.instructions.writer import InstructionAsk, ModelWriter

logger = get_logger()

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


class LocalWriter(LazyModel, ModelWriter):
    """Write instructions with a local VLM through ``AutoProcessor`` and ``AutoModelForImageTextToText``.

    Each image is one user turn of the processor's chat template: the image, then the prompt. Decoding is greedy
    (``do_sample=False``), so an image's answer depends only on the model, the image and the types asked. The model
    loads on the first ``write``, once.

    Args:
        model: a local folder (as ``save_pretrained`` writes it) or a Hub id; default ``Qwen/Qwen2.5-VL-7B-Instruct``.
        max_new_tokens: the longest answer, in tokens.
        batch_size: images per ``generate`` call (batches are left-padded).
        max_image_side: the image is shrunk to this longer side first.
        device: default CUDA when available, else CPU; ``use_device`` overrides it.
        dtype: default bfloat16 on CUDA, float32 on CPU.
    """

    backend = "local"

    def __init__(self, model: str = DEFAULT_MODEL, *, max_new_tokens: int = 512, batch_size: int = 4,
                 max_image_side: int = 1024, device: Optional[str] = None, dtype: Any = None):
        check_positive_int(max_new_tokens=max_new_tokens, batch_size=batch_size, max_image_side=max_image_side)
        check_model_name(model)
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_image_side = max_image_side
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._net: Any = None
        self._processor: Any = None

    def fingerprint(self) -> dict:
        dtype = "auto" if self.dtype is None else str(self.dtype).replace("torch.", "")
        return {"writer": self.backend, "model": self.model, "dtype": dtype, "prompt": prompt_version(),
                "max_new_tokens": self.max_new_tokens, "max_image_side": self.max_image_side}

    def check(self) -> Optional[str]:
        return check_model_name(self.model)

    # -- loading -------------------------------------------------------------------------------------------
    def loaded(self) -> tuple:
        """The (model, processor) pair, loading it on first use."""
        with self._lock:
            if self._net is None:
                torch, transformers = import_torch_transformers("local instruction writer")
                device = self.device or default_device(torch)
                dtype = self.dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
                if isinstance(dtype, str):
                    dtype = getattr(torch, dtype)
                logger.info("loading the instruction writer %s on %s", self.model, device)
                processor = load_pretrained(transformers.AutoProcessor, self.model)
                if not getattr(processor, "chat_template", None):
                    raise ModelLoadError(f"the processor of {self.model} has no chat template; writing instructions "
                                         "needs a chat model")
                tokenizer = getattr(processor, "tokenizer", None)
                if tokenizer is not None:
                    tokenizer.padding_side = "left"  # decoder-only generation continues every prompt from its end
                net = load_pretrained(transformers.AutoModelForImageTextToText, self.model,
                                      **dtype_option(transformers, dtype))
                self._net, self._processor, self.device = net.to(device).eval(), processor, device
            return self._net, self._processor

    # -- answering -----------------------------------------------------------------------------------------
    def answer(self, asks: Sequence[InstructionAsk]) -> list:
        answers: list = []
        for start in range(0, len(asks), self.batch_size):
            answers += self.generate(asks[start:start + self.batch_size])
        return answers

    def generate(self, asks: Sequence[InstructionAsk]) -> list:
        """The model's answer to each ask, greedy, in order."""
        import torch

        net, processor = self.loaded()
        prompts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_for(ask)}]}],
            add_generation_prompt=True, tokenize=False) for ask in asks]
        images = [shrunk(ask.image, self.max_image_side) for ask in asks]
        inputs = processor(text=prompts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device, dtype=net.dtype)  # casts only floating tensors (pixels)
        with torch.inference_mode():
            output = net.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        return processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
