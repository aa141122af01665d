"""Vision operators (``from dataflow.operators.core_vision import PromptedImageEditGenerator``).

``ImageEditEvaluator``, ``ImageEditFilter`` and ``ImageEditSelector`` are imported on first use, so that generating never imports the
scoring code.
"""

from dataflow.operators.core_vision.generate.prompted_image_edit_generator import PromptedImageEditGenerator
from dataflow.operators.core_vision.generate.prompted_image_edit_instruction_generator import (
    PromptedImageEditInstructionGenerator,
)

__all__ = ["PromptedImageEditGenerator", "PromptedImageEditInstructionGenerator", "ImageEditEvaluator",
           "ImageEditFilter", "ImageEditSelector"]


def __getattr__(name: str):
    if name == "ImageEditEvaluator":
        from dataflow.operators.core_vision.eval.image_edit_evaluator import ImageEditEvaluator

        return ImageEditEvaluator
    if name == "ImageEditFilter":
        from dataflow.operators.core_vision.eval.image_edit_filter import ImageEditFilter

        return ImageEditFilter
    if name == "ImageEditSelector":
        from dataflow.operators.core_vision.eval.image_edit_selector import ImageEditSelector

        return ImageEditSelector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
