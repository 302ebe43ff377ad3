"""Expressions described by their facial actions, for naming what a model does not know and for zero-shot use.

Each expression of the supported datasets (DFEW, MAFW, FERV39k, AFEW) is described by the visible actions of its
FACS / EMFACS prototype (Ekman & Friesen's Facial Action Coding System, 1978; the EMFACS emotion prototypes;
contempt as the unilateral lip-corner raise, AU14, after Matsumoto & Ekman). MAFW's anxiety, helplessness and
disappointment have no EMFACS prototype: they are described by the action combinations the compound-expression
literature reports for them (fear- and sadness-like brows and mouths). The phrases name visible actions top to bottom
of the face ("brows raised, eyes wide, mouth open"), the vocabulary of the embedded tiny CLIP's pretraining captions,
so the same table serves the offline default and real CLIP checkpoints.
"""

from collections.abc import Sequence


# expression -> its facial actions (AU numbers in the comments)
DESCRIPTIONS: dict[str, str] = {
    "anger": "brows drawn together, eyes wide, lips pressed",  # AU4 + 5 + 7 + 23/24
    "disgust": "nose wrinkled, lip corners down",  # AU9 + 15 + 16
    "fear": "brows raised, brows drawn together, eyes wide, mouth open",  # AU1 + 2 + 4 + 5 + 20 + 26
    "happiness": "eyes narrowed, lip corners up",  # AU6 + 12
    "neutral": "relaxed face",  # no action
    "sadness": "brows raised, brows drawn together, lip corners down",  # AU1 + 4 + 15
    "surprise": "brows raised, eyes wide, mouth open",  # AU1 + 2 + 5 + 26
    "contempt": "one lip corner raised",  # unilateral AU14
    "anxiety": "brows raised, brows drawn together, eyes wide, lips pressed",  # AU1 + 4 + 5 + 24
    "helplessness": "brows raised, lip corners down, mouth open",  # AU1 + 15 + 26
    "disappointment": "eyes narrowed, lip corners down, lips pressed",  # AU7 + 15 + 24
}

# The class names the dataset presets use, to the expression they name.
ALIASES: dict[str, str] = {
    "happy": "happiness",
    "sad": "sadness",
    "angry": "anger",
    "surprised": "surprise",
    "disgusted": "disgust",
    "fearful": "fear",
}


def expression_of(name: str) -> str | None:
    """The table's expression for a class name (any case, the presets' spellings), or None for a name it lacks."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in DESCRIPTIONS else None


def describe(name: str) -> str:
    """The facial actions of a class name (`"happy"`, `"Happy"`, `"happiness"` alike); a name the table lacks raises,
    naming the ones it has."""
    expression = expression_of(name)
    if expression is None:
        raise ValueError(f"No description for {name!r}; the table describes {', '.join(DESCRIPTIONS)}.")
    return DESCRIPTIONS[expression]


def descriptions_except(known: Sequence[str]) -> dict[str, str]:
    """The table's expressions that none of the `known` class names names: the candidates for a clip decided
    unknown."""
    taken = {expression_of(name) for name in known}
    return {name: text for name, text in DESCRIPTIONS.items() if name not in taken}
