"""Writing edit instructions for source images: the taxonomy of edit types (``edit_types.json``), the plan of types
per image under quotas, the prompts, the quality rules, and the writers (``TemplateWriter``, ``APIWriter``,
``LocalWriter``) that ``PromptedImageEditInstructionGenerator`` runs.

``APIWriter`` needs the ``api`` extra and ``LocalWriter`` torch and transformers; both import them only when used.
"""

from dataflow.operators.core_vision.generate.instructions.quality import QualityRules
from dataflow.operators.core_vision.generate.instructions.taxonomy import EditType, Taxonomy, load_taxonomy
from dataflow.operators.core_vision.generate.instructions.writer import (
    InstructionAsk,
    InstructionWriter,
    TemplateWriter,
)

__all__ = ["APIWriter", "EditType", "InstructionAsk", "InstructionWriter", "LocalWriter", "QualityRules", "Taxonomy",
           "TemplateWriter", "load_taxonomy"]


def __getattr__(name: str):
    if name == "APIWriter":
        from dataflow.operators.core_vision.generate.instructions.api_writer import APIWriter

        return APIWriter
    if name == "LocalWriter":
        from dataflow.operators.core_vision.generate.instructions.local_writer import LocalWriter

        return LocalWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

