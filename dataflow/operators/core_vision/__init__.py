"""Vision operators (``from dataflow.operators.core_vision import PromptedImageEditGenerator``)."""

from dataflow.operators.core_vision.generate.prompted_image_edit_generator import PromptedImageEditGenerator

__all__ = ["PromptedImageEditGenerator"]
