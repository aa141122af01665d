"""Reading a plain-English instruction as an ordered list of global edits.

The rule that keeps object-level edits out: after the filler words ("please", "the image", "it", articles ...)
and the amount ("slightly", "by 30%") are removed, a clause must match one known phrase completely. Any word
left over, such as the noun in "make the sky brighter" or "change the vase to red", makes the clause
unsupported, and one unsupported clause makes the whole instruction a ``RowError``: the backend never returns an
image that silently skips part of what was asked.

Clauses are separated by commas, semicolons, sentence ends, "and", "then", "and then", "also", "next",
"finally" ... and applied in order. The README's grammar table lists the phrases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

from dataflow.core.errors import RowError
from dataflow.core.text import shorten
from dataflow.serving.classic.operations import (
    AutoContrast,
    Blur,
    CenterCrop,
    Enhance,
    Equalize,
    Flip,
    Grayscale,
    Invert,
    Operation,
    Posterize,
    Resize,
    Rotate,
    Scale,
    Sepia,
    Warmth,
)

# Bump whenever a phrase is read differently or an operation's pixels change: it is part of the fingerprint.
GRAMMAR_VERSION = "2"  # 2: words in another script fail the row instead of being dropped

GENERATIVE_HINT = "use a generative backend (--backend flux-kontext)"

# The longest instruction the classic backend reads. Real ones are a few hundred characters; a longer one is a
# broken or hostile row, which fails at once instead of occupying a worker.
MAX_INSTRUCTION_CHARS = 10_000

# Strengths for tone and detail edits: "slightly", no amount, "a lot"; "by N%" gives N / 100.
SLIGHT_STRENGTH = 0.1
DEFAULT_STRENGTH = 0.25
STRONG_STRENGTH = 0.5
DEFAULT_POSTERIZE_LEVELS = 4

_SLIGHT_WORDS = (
    "a tiny bit", "a little bit", "just a bit", "just a little", "a little", "a bit", "a touch", "a tad",
    "slightly", "somewhat", "subtly", "gently", "lightly", "mildly",
)
_STRONG_WORDS = (
    "a great deal", "a lot", "much", "very", "significantly", "strongly", "heavily", "considerably",
    "dramatically", "substantially", "greatly", "far", "way", "really", "extremely",
)
_FILLER_WORDS = (
    "please", "kindly", "can you", "could you", "would you", "will you", "just", "again", "as well",
    "i want you to", "i would like you to", "i d like you to", "i want", "i would like", "i d like",
    "the", "a", "an", "this", "it", "its", "of", "whole", "entire", "overall", "everything",
    "image", "images", "photo", "photos", "photograph", "picture", "pic",
)
_CLAUSE_BREAK = re.compile(
    r"\s*(?:[,;!?]|\.(?!\d)|\b(?:and then|and also|and|then|also|after that|afterwards|finally|lastly|next|"
    r"first|plus)\b)\s*"
)


@dataclass(frozen=True)
class Amount:
    """How much of an edit a clause asks for, as written.

    Args:
        text: the words that gave it ("slightly", "by 30%", "5 pixels").
        level: "slight" or "strong" for the amount words.
        percent: N for "by N%" or "to N%".
        pixels: N for "N px", "N pixels" or "radius N" (a blur radius).
    """

    text: str
    level: Optional[str] = None
    percent: Optional[float] = None
    pixels: Optional[float] = None

    @property
    def is_target(self) -> bool:
        """True for "to N%" (a final value) rather than "by N%" (a change)."""
        return self.text.startswith("to ")


def parse(instruction: str, max_chars: Optional[int] = MAX_INSTRUCTION_CHARS) -> list[Operation]:
    """The operations ``instruction`` asks for, in order; a ``RowError`` names the first clause it cannot do.

    The time taken grows linearly with the instruction's length; one longer than ``max_chars`` (None: no limit)
    is a ``RowError`` before any work.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise RowError("the instruction is empty")
    if max_chars is not None and len(instruction) > max_chars:
        raise RowError(f"the instruction is {len(instruction):,} characters long; the classic backend reads at "
                       f"most {max_chars:,} (it starts {shorten(instruction, 60)!r})")
    unreadable = _unreadable_words(instruction)
    if unreadable:
        raise RowError(_unreadable_message(instruction, unreadable))
    text = normalize(instruction)
    clauses = [clause for clause in _CLAUSE_BREAK.split(text) if clause]
    whole = shorten(text)  # once: quoting the whole text in each clause's subject made parsing quadratic
    operations: list[Operation] = []
    previous_tone: Optional[tuple[_Tone, int]] = None
    for clause in clauses:
        subject = f"'{shorten(clause)}'" if len(clauses) == 1 else f"clause '{shorten(clause)}' of '{whole}'"
        amount, core = _split_clause(clause, subject)
        if not core:
            if amount is not None:
                raise RowError(f"{subject} gives an amount but no edit")
            continue  # a clause of filler only, such as "please,"
        operation, previous_tone = _parse_clause(core, amount, subject, previous_tone)
        operations.append(operation)
    if not operations:
        raise RowError(_no_edit_message(instruction))
    return operations


def _no_edit_message(instruction: str) -> str:
    """Why an instruction of English words gave no operation: they ask for nothing ("please.")."""
    return f"the instruction {shorten(instruction)!r} does not ask for any edit"


def _unreadable_words(instruction: str) -> list[str]:
    """The words holding letters or digits outside ASCII (another language or script), which normalizing would
    drop: the grammar cannot read them, so the whole instruction is refused rather than done in part."""
    return [word for word in re.findall(r"\w+", instruction) if any(not char.isascii() for char in word)]


def _unreadable_message(instruction: str, words: list[str]) -> str:
    quoted = repr(shorten(instruction))
    cannot = (f"the classic backend cannot read {quoted}" if len(words) == len(re.findall(r"\w+", instruction))
              else f"the classic backend cannot read {', '.join(repr(shorten(w, 40)) for w in words[:5])} in {quoted}")
    return (f"{cannot}: it understands the English phrases of its grammar, such as 'convert to grayscale' or "
            "'rotate 90 degrees clockwise'; for other languages and edits, use a generative backend "
            "(--backend flux-kontext, or --backend api)")


def normalize(instruction: str) -> str:
    """Lower-case, unify spellings of sizes, ratios and "black and white", and drop other punctuation."""
    text = instruction.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u00d7", "x")
    text = re.sub(r"\bblack[\s-]*(?:and|&|n)[\s-]*white\b|\bb\s*[&/]\s*w\b", "black_and_white", text)
    text = re.sub(r"'s\b", "", text).replace("'", "")
    text = re.sub(r"(\d)\s*/\s*(\d)", r"\1:\2", text)
    text = re.sub(r"(\d)\s*(?:x|\*|by)\s*(\d)", r"\1x\2", text)
    text = text.replace("&", " and ")
    text = re.sub(r"-(?!\d)|(?<=\w)-(?=\d)", " ", text)  # hyphens join words; a leading minus stays
    text = re.sub(r"[^a-z0-9_%\u00b0:.,;!?\s-]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


# -- clauses ----------------------------------------------------------------------------------------------
def _split_clause(clause: str, subject: str) -> tuple[Optional[Amount], str]:
    """The clause's amount and its core: what is left once the amount and the filler words are removed."""
    amount, rest = _extract_amount(clause, subject)
    return amount, _strip_filler(rest)


def _parse_clause(core, amount, subject, previous_tone):
    """One clause's operation, and the tone it sets for a following bare noun ("... and contrast")."""
    for rule in _RULES:
        match = rule.pattern.fullmatch(core)
        if match:
            return rule.build(match, amount, subject), rule.tone
    for tone in _TONES:
        if re.fullmatch(tone.nouns, core):
            return _continue_tone(tone, amount, subject, previous_tone)
    raise RowError(_unsupported_message(core, subject))


def _continue_tone(tone, amount, subject, previous_tone):
    """A bare tone noun takes the direction of the tone edit before it: "increase brightness and contrast"."""
    if previous_tone is None:
        raise RowError(f"{subject} names {tone.name} but not whether to raise or lower it")
    sign = previous_tone[1]
    if sign < 0 and not tone.reversible:
        raise RowError(f"{subject}: the classic backend cannot remove {tone.name}; {GENERATIVE_HINT}")
    return tone.build(sign, amount, subject), (tone, sign)


def _extract_amount(clause: str, subject: str) -> tuple[Optional[Amount], str]:
    """The clause's amount, if any, and the clause without it."""
    found = [_amount_from(match) for match in _AMOUNT.finditer(clause)]
    rest = _AMOUNT.sub(" ", clause)
    if not found:
        return None, rest
    if len({(amount.level, amount.percent, amount.pixels) for amount in found}) > 1:
        raise RowError(f"{subject} gives more than one amount: {', '.join(repr(a.text) for a in found)}")
    return found[0], rest


def _amount_from(match: re.Match) -> Amount:
    text = match.group(0).strip()
    if match["percent"]:
        return Amount(text, percent=float(match["percent"]))
    if match["pixels"] or match["radius"]:
        return Amount(text, pixels=float(match["pixels"] or match["radius"]))
    return Amount(text, level="slight" if match["slight"] else "strong")


def _strip_filler(text: str) -> str:
    return re.sub(r"\s+", " ", _FILLER.sub(" ", text)).strip()


def _unsupported_message(core: str, subject: str) -> str:
    """Explain a clause no rule matched: how to phrase a known geometry verb, else which backend can do it."""
    first_word = core.split(" ", 1)[0] if core else ""
    for verbs, usage in _USAGE:
        if re.fullmatch(verbs, first_word):
            return f"cannot read {subject}: {usage}; for other edits, {GENERATIVE_HINT}"
    return f"{subject} is not a global edit the classic backend can do exactly; {GENERATIVE_HINT}"


def _words(words) -> str:
    """A regex alternation of phrases, longest first so that "a little bit" wins over "a little"."""
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


_NUMBER = r"\d+(?:\.\d+)?"
_AMOUNT = re.compile(
    rf"(?:\b(?:by|to) )?(?P<percent>{_NUMBER}) ?(?:%|percent\b|per cent\b)"
    rf"|(?:\b(?:by|with|of|to) )?(?<![x\d.])(?P<pixels>{_NUMBER}) ?(?:px|pixels?)\b(?: radius\b)?"
    rf"|(?:\b(?:with|of) )?(?:\ba )?\bradius (?:of )?(?P<radius>{_NUMBER})(?: ?(?:px|pixels?)\b)?"
    rf"|\b(?P<slight>{_words(_SLIGHT_WORDS)})\b"
    rf"|\b(?P<strong>{_words(_STRONG_WORDS)})\b"
)
_FILLER = re.compile(rf"\b(?:{_words(_FILLER_WORDS)})\b")


# -- amounts ----------------------------------------------------------------------------------------------
def _strength(amount: Optional[Amount], name: str, subject: str) -> float:
    """The strength of a tone or detail edit: 0.1 slight, 0.25 by default, 0.5 strong, N / 100 for "by N%"."""
    if amount is None:
        return DEFAULT_STRENGTH
    if amount.pixels is not None:
        raise RowError(f"{subject}: {name} does not take a pixel amount ({amount.text!r})")
    if amount.percent is not None:
        if amount.is_target:
            raise RowError(f"{subject}: say how much to change {name} with 'by N%', not {amount.text!r}")
        return amount.percent / 100
    return SLIGHT_STRENGTH if amount.level == "slight" else STRONG_STRENGTH


def _no_amount(amount: Optional[Amount], name: str, subject: str) -> None:
    if amount is not None:
        raise RowError(f"{subject}: {name} does not take an amount ({amount.text!r})")


# -- tone and detail --------------------------------------------------------------------------------------
_INCREASE = (
    r"increase|raise|boost|enhance|add|more|higher|improve|heighten|amplify|bump up|crank up|pump up|turn up|push|up"
)
_DECREASE = r"decrease|reduce|lower|less|cut|drop|tone down|turn down|dial down|diminish"
_MAKE = r"(?:(?:make|turn|render|give|add|apply|use|get)(?: look)? )?"


@dataclass(frozen=True)
class _Tone:
    """The words of one adjustable quality and how a direction and amount become an operation.

    ``up``/``down`` are words that alone say the direction ("brighter", "darken"); ``up_base``/``down_base`` are
    adjectives that take "more"/"less" ("bright", "dark"); ``subjects`` are words that may name the whole
    image's colours ("colors", "tones"); ``build(sign, amount, subject)`` returns the operation.
    """

    name: str
    nouns: str
    up: str
    up_base: str
    down: str
    down_base: str
    subjects: str
    build: Callable[[int, Optional[Amount], str], Operation]
    reversible: bool = True


def _enhance(quality: str, sign: int, amount: Optional[Amount], subject: str) -> Operation:
    """Factor 1 + s to raise and 1 - s to lower; lowering by more than 100% is refused."""
    strength = _strength(amount, quality, subject)
    if sign < 0 and strength > 1:
        raise RowError(f"{subject}: cannot lower {quality} by more than 100%")
    return Enhance(quality, 1 + sign * strength)


def _warmth(sign: int, amount: Optional[Amount], subject: str) -> Operation:
    strength = _strength(amount, "warmth", subject)
    if strength > 1:
        raise RowError(f"{subject}: warmth changes by at most 100%")
    return Warmth(sign * strength)


def _sharpness(sign: int, amount: Optional[Amount], subject: str) -> Operation:
    """Sharpening is ``Enhance('sharpness', 1 + 4s)`` (2.0 by default); less sharpness is a blur."""
    if sign < 0:
        return _blur(sign, amount, subject)
    return Enhance("sharpness", 1 + 4 * _strength(amount, "sharpness", subject))


def _blur(sign: int, amount: Optional[Amount], subject: str) -> Operation:
    """A radius in pixels when given, else s / 25 of the shorter side (1% by default)."""
    if amount is not None and amount.pixels is not None:
        return Blur(amount.pixels)
    return Blur(_strength(amount, "blur", subject) / 25, relative=True)


_COLOURS = r"colou?rs?"
_TONES = (
    _Tone("brightness", nouns=r"brightness|exposure|lightness",
          up=r"brighter|lighter|brighten|lighten", up_base=r"bright|light",
          down=r"darker|dimmer|darken|dim", down_base=r"dark|dim",
          subjects=r"lighting", build=partial(_enhance, "brightness")),
    _Tone("contrast", nouns=r"contrast", up=r"", up_base=r"contrasty", down=r"", down_base=r"",
          subjects=r"", build=partial(_enhance, "contrast")),
    _Tone("saturation", nouns=rf"saturation|vibrance|vibrancy|colou?rfulness|colou?r saturation|{_COLOURS}",
          up=r"saturate", up_base=r"saturated|vibrant|vivid|colou?rful",
          down=r"desaturate|duller|muted", down_base=r"dull|muted|washed out",
          subjects=_COLOURS, build=partial(_enhance, "saturation")),
    _Tone("warmth", nouns=r"warmth", up=r"warmer", up_base=r"warm", down=r"cooler|colder", down_base=r"cool|cold",
          subjects=rf"{_COLOURS}|tones?|tint|filter|look|cast|feel|lighting|white balance|colou?r temperature",
          build=_warmth),
    _Tone("sharpness", nouns=r"sharpness|clarity|crispness|definition|details?",
          up=r"sharpen|sharper|crisper", up_base=r"sharp|crisp", down=r"", down_base=r"",
          subjects=r"details?|edges", build=_sharpness),
    _Tone("blur", nouns=r"blur|blurriness|gaussian blur|softness",
          up=r"(?:gaussian )?blur|blurrier|soften|softer|defocus", up_base=r"blurry|blurred|soft",
          down=r"", down_base=r"", subjects=r"", build=_blur, reversible=False),
)


def _tone_patterns(tone: _Tone, sign: int) -> list[str]:
    """The phrases that raise (sign 1) or lower (sign -1) ``tone``."""
    if sign > 0:
        words, base, opposite_base, change, particle = tone.up, tone.up_base, tone.down_base, _INCREASE, "up"
    else:
        words, base, opposite_base, change, particle = tone.down, tone.down_base, tone.up_base, _DECREASE, "down"
    patterns = [
        rf"{_MAKE}(?:{change}) (?:{tone.nouns})",
        rf"{_MAKE}(?:{tone.nouns}) (?:{particle}|{'higher' if sign > 0 else 'lower'})",
        rf"turn (?:{tone.nouns}) {particle}",
    ]
    adjectives = ([words] if words else []) + ([base, f"more (?:{base})"] if base else [])
    adjectives += [f"less (?:{opposite_base})"] if opposite_base else []
    if adjectives:
        before = rf"(?:(?:{tone.subjects}) )?" if tone.subjects else ""
        after = rf"(?: (?:{tone.subjects}))?" if tone.subjects else ""
        patterns.append(rf"{_MAKE}{before}(?:{'|'.join(adjectives)})(?: {particle})?{after}")
    return patterns


def _build_tone(tone: _Tone, sign: int, match, amount, subject) -> Operation:
    return tone.build(sign, amount, subject)


# -- styles -----------------------------------------------------------------------------------------------
_STYLE_VERB = r"(?:(?:make|turn|convert|change|transform|render|switch|apply|add|give|use)(?: (?:to|into|in))? )?"
_STYLE_NOUN = rf"(?: (?:filter|effect|look|style|tones?|toned|tint|version|mode|conversion|{_COLOURS}))?"


def _style(operation: Operation, name: str, match, amount, subject) -> Operation:
    _no_amount(amount, name, subject)
    return operation


def _posterize(match, amount, subject) -> Operation:
    """4 levels per channel by default; "to N levels" or "to N bits" (2**N levels)."""
    _no_amount(amount, "posterize", subject)
    if not match["count"]:
        return Posterize(DEFAULT_POSTERIZE_LEVELS)
    count = int(match["count"])
    if match["unit"].startswith("bit"):
        if not 1 <= count <= 8:
            raise RowError(f"{subject}: posterize takes 1 to 8 bits, got {count}")
        return Posterize(2 ** count)
    if not 2 <= count <= 256:
        raise RowError(f"{subject}: posterize takes 2 to 256 levels, got {count}")
    return Posterize(count)


# -- geometry ---------------------------------------------------------------------------------------------
_CLOCKWISE = r"clockwise|cw|to right|right"
_COUNTER_CLOCKWISE = r"counter ?clockwise|anti ?clockwise|ccw|to left|left"
_DEGREES = rf"(?P<degrees>-?{_NUMBER}) ?(?:degrees?|deg|\u00b0)?"
_ROTATE = r"(?:rotate|turn|spin)"


def _rotate(match, amount, subject) -> Operation:
    """Counter-clockwise unless the clause says clockwise/right; a direction without an angle means 90."""
    _no_amount(amount, "rotate", subject)
    groups = match.groupdict()
    degrees = float(groups["degrees"]) if groups.get("degrees") else 90.0
    direction = groups.get("direction")
    clockwise = direction is not None and re.fullmatch(_CLOCKWISE, direction) is not None
    return Rotate(-degrees if clockwise else degrees)


def _upside_down(match, amount, subject) -> Operation:
    _no_amount(amount, "rotate", subject)
    return Rotate(180)


_HORIZONTAL = r"horizontal(?:ly)?|left right|left to right|right to left|sideways"
_VERTICAL = r"vertical(?:ly)?|upside down|top to bottom|bottom to top|top bottom"


def _flip(match, amount, subject) -> Operation:
    _no_amount(amount, "flip", subject)
    axis = match.groupdict().get("axis") or "horizontal"
    return Flip(horizontal=re.fullmatch(_HORIZONTAL, axis) is not None)


_CROP = r"(?:(?:center|centre|centered|centred|middle) )?crop(?:ped)?(?: (?:to|into|as|at|in))?"
_RATIO = rf"(?P<width>{_NUMBER}) ?: ?(?P<height>{_NUMBER})"
_RATIO_NOUN = r"(?: (?:aspect ratio|aspect|ratio|format|shape|crop))?"
_CENTRE = r"(?: (?:from|at|in|around) (?:center|centre|middle)| centered| centred)?"


def _crop(match, amount, subject) -> Operation:
    """A centred crop to ``width:height``, or to a square when the clause has no ratio."""
    _no_amount(amount, "crop", subject)
    if not match.groupdict().get("width"):
        return CenterCrop(1, 1)
    width, height = float(match["width"]), float(match["height"])
    if width <= 0 or height <= 0:
        raise RowError(f"{subject}: an aspect ratio needs two positive numbers")
    return CenterCrop(width, height)


_SCALE_VERB = r"resize|rescale|scale|resample"
_DOWN_VERB = r"downscale|downsample|shrink|scale down|reduce size|reduce resolution"
_UP_VERB = r"upscale|upsample|enlarge|scale up|increase size|increase resolution"
_SIZE_NOUN = r"(?:original )?(?:size|resolution|scale|dimensions?)"


def _resize(match, amount, subject) -> Operation:
    _no_amount(amount, "resize", subject)
    width, height = int(match["width"]), int(match["height"])
    if width < 1 or height < 1:
        raise RowError(f"{subject}: a size needs a positive width and height")
    return Resize(width, height)


def _scale(match, amount, subject) -> Operation:
    """A scale factor from "by N%"/"to N%", "by N"/"Nx"/"by a factor of N", read against the verb.

    "scale by 50%", "scale to 50%" and "shrink to 50%" give 0.5; "shrink by 25%" gives 0.75 and "enlarge by
    25%" 1.25; "downscale by 2x" gives 0.5 and "upscale 2x" 2.
    """
    verb = match["verb"]
    shrinks, grows = re.fullmatch(_DOWN_VERB, verb) is not None, re.fullmatch(_UP_VERB, verb) is not None
    if match["factor"]:
        _no_amount(amount, "scale", subject)
        factor = float(match["factor"])
        factor = 1 / factor if shrinks and factor else factor
    elif amount is not None and amount.percent is not None:
        fraction = amount.percent / 100
        if amount.is_target or not (shrinks or grows):
            factor = fraction
        else:
            factor = 1 - fraction if shrinks else 1 + fraction
    else:
        raise RowError(f"{subject}: say how much to scale, e.g. 'scale by 50%' or 'resize to 512x384'")
    if factor <= 0:
        raise RowError(f"{subject}: the scale factor must be positive")
    if (shrinks and factor >= 1) or (grows and factor <= 1):
        raise RowError(f"{subject}: '{verb}' contradicts a scale factor of {factor:g}")
    return Scale(factor)


_FRACTIONS = {"half": 0.5, "quarter": 0.25, "double": 2.0, "twice": 2.0}


def _fraction(match, amount, subject) -> Operation:
    _no_amount(amount, "resize", subject)
    return Scale(_FRACTIONS[match["fraction"]])


def _halve(match, amount, subject) -> Operation:
    _no_amount(amount, "resize", subject)
    return Scale(0.5)


# -- rules ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    """A phrase (matched against the whole filtered clause) and how it becomes an operation."""

    pattern: re.Pattern
    build: Callable[[re.Match, Optional[Amount], str], Operation]
    tone: Optional[tuple[_Tone, int]] = None


def _tone_rules() -> list[_Rule]:
    rules = []
    for tone in _TONES:
        for sign in (1, -1) if tone.reversible else (1,):
            build = partial(_build_tone, tone, sign)
            rules += [_Rule(re.compile(pattern), build, (tone, sign)) for pattern in _tone_patterns(tone, sign)]
    return rules


def _style_rule(pattern: str, operation: Operation, name: str) -> _Rule:
    return _Rule(re.compile(pattern), partial(_style, operation, name))


_RULES = [
    _style_rule(rf"{_STYLE_VERB}(?:gr[ae]y ?scale|gr[ae]y|black_and_white|monochrome|mono|colou?rless)"
                rf"{_STYLE_NOUN}", Grayscale(), "grayscale"),
    _style_rule(r"(?:remove|strip|drain)(?: all)? colou?rs?", Grayscale(), "grayscale"),
    _style_rule(rf"{_STYLE_VERB}sepia{_STYLE_NOUN}", Sepia(), "sepia"),
    _style_rule(rf"invert(?:ed)?{_STYLE_NOUN}|{_STYLE_VERB}(?:negative|inverted|inverse){_STYLE_NOUN}"
                rf"|{_STYLE_VERB}colou?r inversion", Invert(), "invert"),
    _style_rule(rf"{_STYLE_VERB}auto ?(?:contrast(?:ed)?|levels?)|normali[sz]e(?: contrast| levels| histogram)?"
                r"|stretch (?:histogram|contrast)", AutoContrast(), "auto-contrast"),
    _style_rule(rf"equali[sz]e(?: histogram| {_COLOURS})?|{_STYLE_VERB}(?:histogram )?equali[sz]ation",
                Equalize(), "equalize"),
    _Rule(re.compile(rf"{_STYLE_VERB}posteri[sz](?:e|ed|ation)(?: effect| filter)?"
                     r"(?: (?:to|with|at) (?P<count>\d+) (?P<unit>levels?|bits?))?"), _posterize),
    *_tone_rules(),
    _Rule(re.compile(rf"{_ROTATE}(?: by)? {_DEGREES}(?: (?P<direction>{_CLOCKWISE}|{_COUNTER_CLOCKWISE}))?"), _rotate),
    _Rule(re.compile(rf"{_ROTATE} (?P<direction>{_CLOCKWISE}|{_COUNTER_CLOCKWISE})(?: by)? {_DEGREES}"), _rotate),
    _Rule(re.compile(rf"{_ROTATE}(?: by)? (?P<direction>{_CLOCKWISE}|{_COUNTER_CLOCKWISE})"), _rotate),
    _Rule(re.compile(r"(?:rotate|turn|spin|make|put) upside down"), _upside_down),
    _Rule(re.compile(rf"(?:flip|mirror|reflect)(?:ped|ed)? (?P<axis>{_HORIZONTAL}|{_VERTICAL})"), _flip),
    _Rule(re.compile(rf"{_STYLE_VERB}(?P<axis>horizontal|vertical) (?:flip|mirror|reflection)"), _flip),
    _Rule(re.compile(r"(?:(?:make|create) )?mirror(?:ed)?(?: image)?"), _flip),
    _Rule(re.compile(rf"{_CROP} (?:(?:aspect )?ratio )?{_RATIO}{_RATIO_NOUN}{_CENTRE}"), _crop),
    _Rule(re.compile(rf"{_CROP} square{_RATIO_NOUN}{_CENTRE}"), _crop),
    _Rule(re.compile(rf"{_STYLE_VERB}(?:(?:center|centre) )?(?:square|{_RATIO}) crop{_CENTRE}"), _crop),
    _Rule(re.compile(rf"(?:{_SCALE_VERB}|{_DOWN_VERB}|{_UP_VERB}|make|change size|set size)(?: to)? "
                     r"(?P<width>\d+)x(?P<height>\d+)(?: (?:pixels?|px|resolution))?"), _resize),
    _Rule(re.compile(rf"(?P<verb>{_SCALE_VERB}|{_DOWN_VERB}|{_UP_VERB})"
                     rf"(?:(?: by| to)?(?: factor)? (?P<factor>{_NUMBER}) ?(?:x|times)?)?"), _scale),
    _Rule(re.compile(rf"(?:(?:make|{_SCALE_VERB})(?: to| by)? )?(?P<fraction>half|quarter|double|twice)"
                     rf"(?: {_SIZE_NOUN}| as (?:big|large|wide))?"), _fraction),
    _Rule(re.compile(rf"halve(?: {_SIZE_NOUN})?|(?:{_DOWN_VERB}|cut size)(?: by| in)? half"), _halve),
]

# Usage hints for clauses that start with a geometry verb but do not parse.
_USAGE = (
    (r"rotate|spin", "rotate takes an angle and/or a direction, e.g. 'rotate 90 degrees clockwise', "
                     "'rotate left', 'rotate by 30 degrees'"),
    (r"flip|mirror|reflect", "flip takes a direction: 'flip horizontally' or 'flip vertically'"),
    (r"crop|cropped", "crop takes 'a square' or an aspect ratio such as '16:9' (a centred crop)"),
    (rf"{_SCALE_VERB}|downscale|downsample|upscale|upsample|shrink|enlarge",
     "resizing takes a size or a factor, e.g. 'resize to 512x384', 'scale by 50%', 'make it half the size'"),
    (r"posteri[sz]e", "posterize takes an optional 'to N levels' or 'to N bits'"),
)
