"""The unit of work between operators and servings: one edit request in, one result out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class EditRequest:
    """One row's edit.

    Args:
        key: the row's identity; servings seed their randomness from it, never from batch position.
        image: the decoded RGB reference image (the first one, when the row has several).
        instruction: the edit to apply, in plain language.
        num_images: how many edited images to produce for this row.
        more_images: the row's further reference images, in order, for backends that take several.
        edited: the row's edited images, for servings that measure edits instead of making them (scorers).
        files: the encoded files ``images`` were decoded from, bytes each, in order; given only to servings that
            send files as they are (``ImageEditServing.wants_source_files``), empty otherwise.
        earlier_turns: the user messages of the row's conversation before ``instruction``, in order; given only
            to servings that edit turn by turn (``ImageEditServing.wants_earlier_turns``), empty otherwise.
    """

    key: str
    image: "Image.Image"
    instruction: str
    num_images: int = 1
    more_images: tuple = ()
    edited: tuple = ()
    files: tuple = ()
    earlier_turns: tuple = ()

    @property
    def images(self) -> list:
        """Every reference image of the row, in order; the output keeps the first one's aspect ratio."""
        return [self.image, *self.more_images]


@dataclass
class EditResult:
    """The outcome of one request: its images, or an error message for that row alone.

    ``final`` marks an error that a rerun would meet again and that costs to find (an API's refusal of the
    content): a resumed run keeps it instead of sending the row again. A serving that measures rather than
    edits (a scorer) returns ``values`` instead of images: JSON-able, one entry per edited image.
    """

    images: list = field(default_factory=list)
    error: Optional[str] = None
    final: bool = False
    values: Optional[list] = None

    @property
    def ok(self) -> bool:
        return self.error is None
