"""``LocalJudge``: a VLM judge run locally with ``transformers`` (Qwen2.5-VL, LLaVA ... any image-text-to-text
model whose processor has a chat template), greedy decoding, a batch of items per ``generate`` call."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.core.errors import ModelLoadError
from dataflow.core.validation import check_positive_int
from dataflow.operators.core_vision.eval.metric import ScoreItem, ScoreResult
from dataflow.operators.core_vision.eval.metrics.hf_model import ModelMetric, dtype_option, load_pretrained
from dataflow.operators.core_vision.eval.metrics.images import split_usable
from dataflow.operators.core_vision.eval.metrics.judge import NAME, judge_prompt, judgement, prompt_version

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


class LocalJudge(ModelMetric):
    """Judge edits with a local VLM through ``AutoProcessor`` and ``AutoModelForImageTextToText``.

    Each item is one user turn of the processor's chat template: the source (the item's first source), the edit,
    then the judge's prompt. Decoding is greedy (``do_sample=False``), so a judgement depends only on the model,
    the item and, through padding, very slightly on the batch. Values: ``sc``, ``pq``, ``overall``, ``reason``
    (see ``judge``); an answer without both scores is that item's error.

    Args:
        model: a local folder or a Hub id; default ``Qwen/Qwen2.5-VL-7B-Instruct``.
        max_new_tokens: the longest answer, in tokens.
        batch_size: items per ``generate`` call (batches are left-padded).
        device: default CUDA when available, else CPU; ``use_device`` overrides it.
        dtype: default bfloat16 on CUDA, float32 on CPU.
    """

    name = NAME

    def __init__(self, model: str = DEFAULT_MODEL, *, max_new_tokens: int = 256, batch_size: int = 4,
                 device: Optional[str] = None, dtype: Any = None):
        check_positive_int(max_new_tokens=max_new_tokens)
        super().__init__(model, batch_size=batch_size, device=device, dtype=dtype)
        self.max_new_tokens = max_new_tokens

    def default_dtype(self, torch: Any, device: str) -> Any:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "backend": "local", "prompt": prompt_version(),
                "max_new_tokens": self.max_new_tokens}

    def load_model(self, transformers: Any, device: str, dtype: Any) -> tuple[Any, Any]:
        processor = load_pretrained(transformers.AutoProcessor, self.model)
        if not getattr(processor, "chat_template", None):
            raise ModelLoadError(f"the processor of {self.model} has no chat template; the judge needs a chat model")
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues every prompt from its end
        net = load_pretrained(transformers.AutoModelForImageTextToText, self.model, **dtype_option(transformers, dtype))
        return net, processor

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        results, usable, pairs = split_usable(items)
        if usable:
            answers = self.generate(pairs, [items[i].instruction for i in usable])
            for i, answer in zip(usable, answers):
                results[i] = judgement(answer)
        return results

    def generate(self, pairs: Sequence[tuple[Any, Any]], instructions: Sequence[str]) -> list[str]:
        """The model's answer to each (source, edit, instruction), greedy, in order."""
        import torch

        net, processor = self.loaded()
        prompts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                          {"type": "text", "text": judge_prompt(instruction)}]}],
            add_generation_prompt=True, tokenize=False) for instruction in instructions]
        images = [image for pair in pairs for image in pair]
        inputs = processor(text=prompts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device, dtype=net.dtype)  # casts only floating tensors (pixels)
        with torch.inference_mode():
            output = net.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        answers = output[:, inputs["input_ids"].shape[1]:]
        return processor.batch_decode(answers, skip_special_tokens=True)
