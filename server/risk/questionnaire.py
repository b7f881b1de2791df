"""Risk questionnaires loaded from data files, validated strictly.

A questionnaire is a JSON file, not code, so a deployment can add its own form (forces are
moving from DASH to DARA) by dropping a file in a folder. The format:

    {
      "format": 1,
      "id": "dash", "title": "...", "version": "2009", "description": "...",
      "questions": [
        {"id": "q1", "text": "...", "kind": "yes_no_unknown", "required": false},
        {"id": "p", "text": "...", "kind": "choice",
         "options": [{"value": "high", "label": "High"}]},
        {"id": "n", "text": "...", "kind": "text", "max_length": 2000}
      ],
      "scoring": {"rule": "count_yes"}            # or {"rule": "none", "band_question": "p"}
      "bands": [{"id": "standard", "label": "Standard", "min_score": 0}, ...]
    }

Band ids come from one shared scale (standard < medium < high) so that an assessment on one
form can be compared with the previous contact's on another. Every error names the file and
the field, because the person reading it is configuring a deployment, not debugging code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TypeVar

FORMAT_VERSION = 1
DEFAULT_FORM_ID = "dash"
MAX_FILE_BYTES = 256 * 1024
MAX_QUESTIONS = 200
MAX_TEXT_ANSWER = 10_000
DEFAULT_TEXT_ANSWER = 2_000
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class RiskBand(StrEnum):
    """The shared risk scale; the order of the members is the order of severity."""

    STANDARD = "standard"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for standard, growing with severity: bands compare by rank."""
        return list(RiskBand).index(self)


class QuestionKind(StrEnum):
    YES_NO_UNKNOWN = "yes_no_unknown"
    CHOICE = "choice"
    TEXT = "text"


class ScoringRule(StrEnum):
    COUNT_YES = "count_yes"  # score = number of "yes" answers; bands by min_score
    NONE = "none"  # no numeric score: the band is a judgement (optionally a choice question)


YES_NO_UNKNOWN_ANSWERS = ("yes", "no", "not_known")


class QuestionnaireError(ValueError):
    """A questionnaire data file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class ChoiceOption:
    value: str
    label: str


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    kind: QuestionKind
    required: bool = False
    options: tuple[ChoiceOption, ...] = ()
    max_length: int = DEFAULT_TEXT_ANSWER

    def option_values(self) -> tuple[str, ...]:
        return tuple(option.value for option in self.options)


@dataclass(frozen=True)
class BandThreshold:
    band: RiskBand
    label: str
    min_score: int | None  # None when the form has no numeric score


@dataclass(frozen=True)
class Questionnaire:
    """One validated form: its questions, how it is scored and its bands."""

    id: str
    title: str
    version: str
    description: str
    questions: tuple[Question, ...]
    rule: ScoringRule
    bands: tuple[BandThreshold, ...]
    band_question: str | None = None  # for rule none: the choice question giving the band

    def question(self, question_id: str) -> Question | None:
        for question in self.questions:
            if question.id == question_id:
                return question
        return None

    def band_for_score(self, score: int) -> RiskBand:
        """The band a count_yes score falls in (highest threshold not above the score)."""
        if self.rule is not ScoringRule.COUNT_YES:
            raise ValueError(f"form {self.id} has no numeric score")
        chosen = self.bands[0].band
        for threshold in self.bands:
            if threshold.min_score is not None and score >= threshold.min_score:
                chosen = threshold.band
        return chosen


_E = TypeVar("_E", bound=StrEnum)


class _Reader:
    """Pulls typed fields out of decoded JSON, failing with `file: path: problem`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> QuestionnaireError:
        return QuestionnaireError(f"{self.source}: {where or '(top level)'}: {problem}")

    def obj(
        self, value: object, where: str, required: set[str], optional: set[str]
    ) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object")
        for key in value:
            if key not in required and key not in optional:
                raise self.fail(f"{where}.{key}" if where else str(key), "unknown field")
        for key in sorted(required):
            if key not in value:
                raise self.fail(f"{where}.{key}" if where else key, "missing")
        return {str(k): v for k, v in value.items()}

    def text(
        self, value: object, where: str, max_length: int, pattern: re.Pattern[str] | None = None
    ) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "must be a string")
        stripped = value.strip()
        if not stripped:
            raise self.fail(where, "must not be empty")
        if len(stripped) > max_length:
            raise self.fail(where, f"longer than {max_length} characters")
        if pattern is not None and not pattern.fullmatch(stripped):
            raise self.fail(where, f"{stripped!r} must match {pattern.pattern}")
        return stripped

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "must be true or false")
        return value

    def integer(self, value: object, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "must be an integer")
        if not low <= value <= high:
            raise self.fail(where, f"must be between {low} and {high}")
        return value

    def array(self, value: object, where: str, min_items: int, max_items: int) -> list[object]:
        if not isinstance(value, list):
            raise self.fail(where, "must be a list")
        if not min_items <= len(value) <= max_items:
            raise self.fail(where, f"must have {min_items} to {max_items} items")
        return list(value)

    def enum(self, value: object, where: str, enum: type[_E]) -> _E:
        allowed = [member.value for member in enum]
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(where, f"must be one of {', '.join(allowed)}")
        return enum(value)


def parse_questionnaire(data: object, source: str) -> Questionnaire:
    """Validate decoded JSON as a questionnaire; `source` names it in errors."""
    r = _Reader(source)
    top = r.obj(
        data,
        "",
        {"format", "id", "title", "version", "questions", "scoring", "bands"},
        {"description"},
    )
    if top["format"] != FORMAT_VERSION or isinstance(top["format"], bool):
        raise r.fail("format", f"must be {FORMAT_VERSION}")
    form_id = r.text(top["id"], "id", 40, ID_PATTERN)
    title = r.text(top["title"], "title", 200)
    version = r.text(top["version"], "version", 40)
    description = (
        r.text(top["description"], "description", 2000) if "description" in top else ""
    )

    questions: list[Question] = []
    seen: set[str] = set()
    for index, raw in enumerate(r.array(top["questions"], "questions", 1, MAX_QUESTIONS)):
        where = f"questions[{index}]"
        question = _parse_question(r, raw, where)
        if question.id in seen:
            raise r.fail(f"{where}.id", f"duplicate question id {question.id!r}")
        seen.add(question.id)
        questions.append(question)

    scoring = r.obj(top["scoring"], "scoring", {"rule"}, {"band_question"})
    rule = r.enum(scoring["rule"], "scoring.rule", ScoringRule)
    band_question: str | None = None
    if "band_question" in scoring:
        if rule is not ScoringRule.NONE:
            raise r.fail("scoring.band_question", "only allowed with rule none")
        band_question = r.text(scoring["band_question"], "scoring.band_question", 40)

    bands = _parse_bands(r, top["bands"], rule, len(questions))
    if rule is ScoringRule.COUNT_YES and not any(
        q.kind is QuestionKind.YES_NO_UNKNOWN for q in questions
    ):
        raise r.fail("scoring.rule", "count_yes needs at least one yes_no_unknown question")
    if band_question is not None:
        target = next((q for q in questions if q.id == band_question), None)
        if target is None:
            raise r.fail("scoring.band_question", f"no question with id {band_question!r}")
        if target.kind is not QuestionKind.CHOICE:
            raise r.fail("scoring.band_question", "must name a choice question")
        band_ids = {b.band.value for b in bands}
        if set(target.option_values()) != band_ids:
            raise r.fail(
                "scoring.band_question",
                f"options of {band_question!r} must be exactly the band ids "
                f"{', '.join(sorted(band_ids))}",
            )
    return Questionnaire(
        id=form_id,
        title=title,
        version=version,
        description=description,
        questions=tuple(questions),
        rule=rule,
        bands=bands,
        band_question=band_question,
    )


def _parse_question(r: _Reader, raw: object, where: str) -> Question:
    fields = r.obj(raw, where, {"id", "text", "kind"}, {"required", "options", "max_length"})
    question_id = r.text(fields["id"], f"{where}.id", 40, ID_PATTERN)
    text = r.text(fields["text"], f"{where}.text", 500)
    kind = r.enum(fields["kind"], f"{where}.kind", QuestionKind)
    required = r.boolean(fields["required"], f"{where}.required") if "required" in fields else False
    options: list[ChoiceOption] = []
    if kind is QuestionKind.CHOICE:
        if "options" not in fields:
            raise r.fail(f"{where}.options", "missing (a choice question needs options)")
        values: set[str] = set()
        for i, raw_option in enumerate(r.array(fields["options"], f"{where}.options", 2, 50)):
            owhere = f"{where}.options[{i}]"
            option = r.obj(raw_option, owhere, {"value", "label"}, set())
            value = r.text(option["value"], f"{owhere}.value", 40, ID_PATTERN)
            if value in values:
                raise r.fail(f"{owhere}.value", f"duplicate option {value!r}")
            values.add(value)
            options.append(ChoiceOption(value, r.text(option["label"], f"{owhere}.label", 200)))
    elif "options" in fields:
        raise r.fail(f"{where}.options", f"only allowed on choice questions, not {kind.value}")
    max_length = DEFAULT_TEXT_ANSWER
    if "max_length" in fields:
        if kind is not QuestionKind.TEXT:
            raise r.fail(f"{where}.max_length", "only allowed on text questions")
        max_length = r.integer(fields["max_length"], f"{where}.max_length", 1, MAX_TEXT_ANSWER)
    return Question(question_id, text, kind, required, tuple(options), max_length)


def _parse_bands(
    r: _Reader, raw: object, rule: ScoringRule, question_count: int
) -> tuple[BandThreshold, ...]:
    bands: list[BandThreshold] = []
    for index, raw_band in enumerate(r.array(raw, "bands", 1, len(RiskBand))):
        where = f"bands[{index}]"
        if rule is ScoringRule.COUNT_YES:
            fields = r.obj(raw_band, where, {"id", "label", "min_score"}, set())
        else:
            fields = r.obj(raw_band, where, {"id", "label"}, set())
        band = r.enum(fields["id"], f"{where}.id", RiskBand)
        label = r.text(fields["label"], f"{where}.label", 100)
        min_score: int | None = None
        if rule is ScoringRule.COUNT_YES:
            min_score = r.integer(fields["min_score"], f"{where}.min_score", 0, question_count)
        if bands:
            previous = bands[-1]
            if band.rank <= previous.band.rank:
                raise r.fail(f"{where}.id", "bands must go from lowest to highest, once each")
            if (
                min_score is not None
                and previous.min_score is not None
                and min_score <= previous.min_score
            ):
                raise r.fail(f"{where}.min_score", "thresholds must increase")
        elif min_score is not None and min_score != 0:
            raise r.fail(f"{where}.min_score", "the lowest band must start at 0")
        bands.append(BandThreshold(band, label, min_score))
    return tuple(bands)


def load_questionnaire(path: Path) -> Questionnaire:
    """Read and validate one questionnaire file."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise QuestionnaireError(f"{source}: file is larger than {MAX_FILE_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise QuestionnaireError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    return _decode(raw, source)


def _decode(raw: bytes, source: str) -> Questionnaire:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise QuestionnaireError(f"{source}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise QuestionnaireError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return parse_questionnaire(data, source)


def builtin_questionnaires() -> dict[str, Questionnaire]:
    """The forms shipped with the service (DASH, THRIVE), by id."""
    forms: dict[str, Questionnaire] = {}
    folder = resources.files("server.risk").joinpath("forms")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            form = _decode(entry.read_bytes(), f"server/risk/forms/{entry.name}")
            forms[form.id] = form
    return forms


def load_questionnaires(extra_dir: Path | None = None) -> dict[str, Questionnaire]:
    """The built-in forms plus every `*.json` in a deployment's folder, by id.

    A deployment's form may not reuse a built-in id: a silent replacement of DASH would
    change everyone's scores without anyone noticing.
    """
    forms = builtin_questionnaires()
    if extra_dir is None:
        return forms
    if not extra_dir.is_dir():
        raise QuestionnaireError(f"{extra_dir}: not a folder of questionnaire files")
    for path in sorted(extra_dir.glob("*.json")):
        form = load_questionnaire(path)
        if form.id in forms:
            raise QuestionnaireError(f"{path}: id: {form.id!r} is already used by another form")
        forms[form.id] = form
    return forms

