"""``EditScoreMetric``: the EditScore edit reward (VectorSpaceLab, arXiv 2509.23909) run with ``transformers``.

EditScore is a VLM fine-tuned (a LoRA on Qwen2.5-VL-7B-Instruct, ``EditScore/EditScore-7B``) to answer two
VIEScore-style questions, each as ``{"reasoning": ..., "score": [a, b]}`` on a 0-25 scale: semantic consistency
(the source and the edit: was the instruction followed, ``a``; was nothing else changed, ``b``) and perceptual
quality (the edit alone: naturalness, artifacts). Its reward is ``overall`` = sqrt(min(SC) * min(PQ)), rescaled to
0-10: one comparable number per candidate, the one best-of-N ranks by.

Why not the ``editscore`` package (0.2 on PyPI, Apache-2.0): it moves inputs to ``"cuda"`` unconditionally, samples
at temperature 0.7 after re-seeding Python's, NumPy's and torch's global generators, inserts a relative folder into
``sys.path`` on import, and needs ``qwen-vl-utils`` and ``peft`` for every backbone. Here the same prompts (copied
from its ``vie_prompts.py``) and the same arithmetic run through the judge's loading path: a local folder or a Hub
id, any device, greedy decoding (deterministic), and the adapter merged into the base with ``peft`` (needed only
when ``lora`` is set). The images go through the processor's chat template rather than EditScore's hand-written
``<img1>:`` one, so numbers may differ slightly from the paper's.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Optional, Sequence

from dataflow.core.errors import ModelLoadError
from dataflow.core.validation import check_positive_int
from dataflow.io.model_source import looks_like_path
from dataflow.operators.core_vision.eval.metric import ScoreItem, ScoreResult
from dataflow.operators.core_vision.eval.metrics.images import split_usable
from dataflow.operators.core_vision.eval.metrics.judge import _json_objects, _score, _start
from dataflow.operators.core_vision.eval.metrics.local_judge import LocalJudge

NAME = "editscore"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_LORA = "EditScore/EditScore-7B"
SCORE_RANGE = 25

# EditScore's prompts (editscore/vie_prompts.py, Apache-2.0), verbatim
CONTEXT = """You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated \
image(s) based on given rules.
All the input images are AI-generated. All human in the images are AI-generated too. so you need not worry about \
the privacy confidentials.

IMPORTANT: You will have to give your output in this way (Keep your reasoning concise and short.):
{
"reasoning" : "...",
"score" : [...]
}
"""
TWO_IMAGE_EDIT_RULE = """RULES:

Two images will be provided: The first being the original AI-generated image and the second being an edited \
version of the first.
The objective is to evaluate how successfully the editing instruction has been executed in the second image.

Note that sometimes the two images might look identical due to the failure of image edit.
"""
SC_RULE = """
From scale 0 to 10: 
A score from 0 to 10 will be given based on the success of the editing. (0 indicates that the scene in the edited \
image does not follow the editing instruction at all. 10 indicates that the scene in the edited image follow the \
editing instruction text perfectly.)
A second score from 0 to 10 will rate the degree of overediting in the second image. (0 indicates that the scene in \
the edited image is completely different from the original. 10 indicates that the edited image can be recognized \
as a minimal edited yet effective version of original.)
Put the score in a list such that output score = [score1, score2], where 'score1' evaluates the editing success \
and 'score2' evaluates the degree of overediting.

Editing instruction: <instruction>
"""
PQ_RULE = """RULES:

The image is an AI-generated image.
The objective is to evaluate how successfully the image has been generated.

From scale 0 to 10: 
A score from 0 to 10 will be given based on image naturalness. 
(
    0 indicates that the scene in the image does not look natural at all or give a unnatural feeling such as wrong \
sense of distance, or wrong shadow, or wrong lighting. 
    10 indicates that the image looks natural.
)
A second score from 0 to 10 will rate the image artifacts. 
(
    0 indicates that the image contains a large portion of distortion, or watermark, or scratches, or blurred \
faces, or unusual body parts, or subjects not harmonized. 
    10 indicates the image has no artifacts.
)
Put the score in a list such that output score = [naturalness, artifacts]
"""
_SCORE_LIST = re.compile(r'"?score"?\s*[:=]\s*\[([^\]]*)\]', re.I)


def check_adapter_name(lora: Any) -> Optional[str]:
    """``ModelLoadError`` if ``lora`` names a local folder that holds no adapter; a note for a Hub id, else None."""
    if not isinstance(lora, str) or not lora.strip():
        raise ModelLoadError(f"lora must be a local adapter folder or a Hugging Face Hub id, got {lora!r}")
    folder = os.path.expanduser(lora)
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
            raise ModelLoadError(f"lora {lora} holds no adapter_config.json; pass the folder peft's save_pretrained() "
                                 "or a Hub download produced")
        return None
    if looks_like_path(lora):
        raise ModelLoadError(f"lora adapter folder not found: {lora}")
    return f"the adapter {lora} will be fetched from the Hugging Face Hub (or its local cache) when scoring starts"


def sc_prompt(instruction: str, score_range: int = SCORE_RANGE) -> str:
    """The semantic-consistency question (source and edit), as EditScore builds it."""
    rule = SC_RULE.replace("10", str(score_range))
    return "\n".join([CONTEXT, TWO_IMAGE_EDIT_RULE, rule]).replace("<instruction>", instruction)


def pq_prompt(score_range: int = SCORE_RANGE) -> str:
    """The perceptual-quality question (the edit alone), as EditScore builds it."""
    return "\n".join([CONTEXT, PQ_RULE.replace("10", str(score_range))])


def score_list(text: Any) -> tuple[list, Optional[str]]:
    """(the numbers of the answer's ``score`` list, its ``reasoning``); ``ValueError`` when there is no list."""
    if isinstance(text, str):
        for candidate in _json_objects(text):
            scores = candidate.get("score")
            if isinstance(scores, list) and scores and all(_score(v) is not None for v in scores):
                reason = candidate.get("reasoning")
                return [_score(v) for v in scores], reason if isinstance(reason, str) else None
        match = _SCORE_LIST.search(text)
        if match:
            numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", match.group(1))]
            if numbers:
                return numbers, None
    raise ValueError(f"the answer has no score list: {_start(text if isinstance(text, str) else repr(text))!r}")


def editscore_values(sc_answer: str, pq_answer: str, score_range: int = SCORE_RANGE) -> dict:
    """EditScore's values from its two answers, each on 0-10: ``prompt_following`` and ``consistency`` (the SC
    list), ``perceptual_quality`` (the PQ list's minimum), ``overall`` = sqrt(min(SC) * min(PQ)), ``reason``."""
    sc, sc_reason = score_list(sc_answer)
    pq, _ = score_list(pq_answer)
    unit = score_range / 10

    def scaled(value: float) -> float:
        return min(10.0, max(0.0, value / unit))

    sc_min, pq_min = scaled(min(sc)), scaled(min(pq))
    return {"prompt_following": scaled(sc[0]), "consistency": scaled(sc[1] if len(sc) > 1 else sc[0]),
            "perceptual_quality": pq_min, "overall": math.sqrt(sc_min * pq_min),
            "reason": sc_reason if sc_reason is not None else _start(sc_answer, 500)}


class EditScoreMetric(LocalJudge):
    """The EditScore reward of each edit, from a local VLM with an optional LoRA adapter.

    Values (0-10): ``prompt_following``, ``consistency``, ``perceptual_quality``, ``overall`` (the reward), and
    ``reason``. An answer without a score list is that item's error.

    Args:
        model: the base VLM, a local folder or a Hub id; default ``Qwen/Qwen2.5-VL-7B-Instruct``.
        lora: the EditScore adapter on top of it, a local folder or a Hub id; default ``EditScore/EditScore-7B``;
            None for the base model alone (e.g. a folder with the adapter already merged).
        score_range: the scale the prompts ask for (EditScore's models are trained on 25).
        max_new_tokens: the longest answer, in tokens (the reasoning comes first).
        batch_size: items per ``generate`` call; each item is two questions.
        device: default CUDA when available, else CPU. dtype: default bfloat16 on CUDA, float32 on CPU.
    """

    name = NAME

    def __init__(self, model: str = DEFAULT_MODEL, *, lora: Optional[str] = DEFAULT_LORA,
                 score_range: int = SCORE_RANGE, max_new_tokens: int = 512, batch_size: int = 4,
                 device: Optional[str] = None, dtype: Any = None):
        check_positive_int(score_range=score_range)
        super().__init__(model, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device, dtype=dtype)
        if lora:
            check_adapter_name(lora)
        self.lora = lora or None
        self.score_range = score_range

    def fingerprint(self) -> dict:
        return {"metric": self.name, "model": self.model, "lora": self.lora, "score_range": self.score_range,
                "dtype": "auto" if self.dtype is None else str(self.dtype).replace("torch.", ""),
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def check(self) -> Optional[str]:
        notes = [note for note in (super().check(), check_adapter_name(self.lora) if self.lora else None)
                 if note]
        return "; ".join(notes) or None

    def load_model(self, transformers: Any, device: str, dtype: Any) -> tuple[Any, Any]:
        net, processor = super().load_model(transformers, device, dtype)
        if self.lora:
            net = self.merged_adapter(net)
        return net, processor

    def merged_adapter(self, net: Any) -> Any:
        """``net`` with the ``lora`` adapter merged into its weights (as EditScore does: then it runs as fast as
        the base model)."""
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ModelLoadError(f"the editscore metric's adapter {self.lora} needs peft ({exc}): pip install peft, "
                                 "or pass lora=None with a merged model") from None
        try:
            return PeftModel.from_pretrained(net, self.lora).merge_and_unload()
        except Exception as exc:  # a missing or incompatible adapter: nothing can be scored
            raise ModelLoadError(f"could not load the LoRA adapter {self.lora} onto {self.model} "
                                 f"({type(exc).__name__}: {exc})") from None

    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        results, usable, pairs = split_usable(items)
        if usable:
            sc = self.ask([list(pair) for pair in pairs],
                          [sc_prompt(items[i].instruction, self.score_range) for i in usable])
            pq = self.ask([[edit] for _, edit in pairs], [pq_prompt(self.score_range)] * len(pairs))
            for i, sc_answer, pq_answer in zip(usable, sc, pq):
                try:
                    results[i] = ScoreResult(editscore_values(sc_answer, pq_answer, self.score_range))
                except ValueError as exc:
                    results[i] = ScoreResult(error=f"EditScore's {str(exc)}")
        return results

    def ask(self, images: Sequence[list], texts: Sequence[str]) -> list[str]:
        """The model's greedy answer to each (images, text) user turn, in order; every turn has as many images."""
        import torch

        net, processor = self.loaded()
        prompts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"} for _ in turn] + [{"type": "text", "text": text}]}],
            add_generation_prompt=True, tokenize=False) for turn, text in zip(images, texts)]
        inputs = processor(text=prompts, images=[image for turn in images for image in turn], padding=True,
                           return_tensors="pt")
        inputs = inputs.to(self.device, dtype=net.dtype)
        with torch.inference_mode():
            output = net.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        return processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
