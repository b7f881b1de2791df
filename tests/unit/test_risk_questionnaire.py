"""server.risk.questionnaire: forms are data files, shipped DASH/THRIVE, strict validation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.risk.assessment import assess
from server.risk.questionnaire import (
    DEFAULT_FORM_ID,
    QuestionKind,
    QuestionnaireError,
    RiskBand,
    ScoringRule,
    builtin_questionnaires,
    load_questionnaire,
    load_questionnaires,
    parse_questionnaire,
)

DARA: dict[str, Any] = {
    "format": 1,
    "id": "dara",
    "title": "Domestic Abuse Risk Assessment (local)",
    "version": "2024-1",
    "questions": [
        {"id": f"d{i}", "text": f"Question {i}?", "kind": "yes_no_unknown"} for i in range(1, 7)
    ]
    + [{"id": "notes", "text": "Anything else?", "kind": "text", "max_length": 500}],
    "scoring": {"rule": "count_yes"},
    "bands": [
        {"id": "standard", "label": "Standard", "min_score": 0},
        {"id": "medium", "label": "Medium", "min_score": 3},
        {"id": "high", "label": "High", "min_score": 5},
    ],
}


def write(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_dash_is_shipped_as_the_default_with_24_yes_no_unknown_questions() -> None:
    forms = builtin_questionnaires()
    assert DEFAULT_FORM_ID == "dash"
    dash = forms["dash"]
    assert len(dash.questions) == 24
    assert [q.id for q in dash.questions] == [f"q{i}" for i in range(1, 25)]
    assert all(q.kind is QuestionKind.YES_NO_UNKNOWN for q in dash.questions)
    assert len({q.text for q in dash.questions}) == 24
    assert dash.rule is ScoringRule.COUNT_YES
    assert [(b.band, b.min_score) for b in dash.bands] == [
        (RiskBand.STANDARD, 0),
        (RiskBand.MEDIUM, 10),
        (RiskBand.HIGH, 14),
    ]
    q14, q15 = dash.question("q14"), dash.question("q15")
    assert q14 is not None and "threatened to kill" in q14.text
    assert q15 is not None and "strangle" in q15.text


def test_thrive_is_structured_judgement_with_a_priority_and_no_score() -> None:
    thrive = builtin_questionnaires()["thrive"]
    assert thrive.rule is ScoringRule.NONE
    assert thrive.band_question == "priority"
    texts = " ".join(q.text for q in thrive.questions)
    for element in ("Threat", "Harm", "Risk", "Investigation", "Vulnerability", "Engagement"):
        assert element in texts
    priority = thrive.question("priority")
    assert priority is not None and priority.required
    assert priority.option_values() == ("standard", "medium", "high")


def test_a_deployment_adds_its_own_form_without_code(tmp_path: Path) -> None:
    write(tmp_path, "dara.json", DARA)
    forms = load_questionnaires(tmp_path)
    assert set(forms) == {"dash", "thrive", "dara"}
    answers = {f"d{i}": "yes" if i <= 3 else "no" for i in range(1, 7)}
    result = assess(forms["dara"], {**answers, "notes": "x"})
    assert result.score == 3 and result.final_band is RiskBand.MEDIUM


def test_a_deployment_form_may_not_replace_a_builtin(tmp_path: Path) -> None:
    write(tmp_path, "mydash.json", {**DARA, "id": "dash"})
    with pytest.raises(QuestionnaireError, match=r"mydash\.json: id: 'dash' is already used"):
        load_questionnaires(tmp_path)


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(QuestionnaireError, match="not a folder"):
        load_questionnaires(tmp_path / "nope")


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        target: Any = data
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return apply


def _delete(path: str) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        target: Any = data
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[keys[-1]]

    return apply


BAD_FILES: list[tuple[str, Mutation, str]] = [
    ("missing id", _delete("id"), r"id: missing"),
    ("unknown top field", _set("colour", "red"), r"colour: unknown field"),
    ("wrong format", _set("format", 2), r"format: must be 1"),
    ("bool format", _set("format", True), r"format: must be 1"),
    ("bad id", _set("id", "Has Spaces"), r"id: 'Has Spaces' must match"),
    ("empty title", _set("title", "  "), r"title: must not be empty"),
    ("no questions", _set("questions", []), r"questions: must have 1 to"),
    ("questions not list", _set("questions", {}), r"questions: must be a list"),
    ("bad kind", _set("questions.0.kind", "scale"), r"questions\[0\]\.kind: must be one of"),
    ("question text missing", _delete("questions.2.text"), r"questions\[2\]\.text: missing"),
    ("question text not str", _set("questions.1.text", 5), r"questions\[1\]\.text: must be a"),
    (
        "duplicate question id",
        _set("questions.1.id", "d1"),
        r"questions\[1\]\.id: duplicate question id 'd1'",
    ),
    (
        "options on yes/no",
        _set("questions.0.options", [{"value": "a", "label": "A"}]),
        r"questions\[0\]\.options: only allowed on choice",
    ),
    (
        "choice without options",
        _set("questions.0.kind", "choice"),
        r"questions\[0\]\.options: missing",
    ),
    (
        "max_length on yes/no",
        _set("questions.0.max_length", 10),
        r"questions\[0\]\.max_length: only allowed on text",
    ),
    ("huge max_length", _set("questions.6.max_length", 10**6), r"max_length: must be between"),
    ("required not bool", _set("questions.0.required", "yes"), r"required: must be true"),
    ("bad rule", _set("scoring.rule", "sum"), r"scoring\.rule: must be one of count_yes, none"),
    (
        "band_question with count_yes",
        _set("scoring.band_question", "notes"),
        r"scoring\.band_question: only allowed with rule none",
    ),
    ("unknown band", _set("bands.1.id", "severe"), r"bands\[1\]\.id: must be one of"),
    ("bands out of order", _set("bands.1.id", "high"), r"bands\[2\]\.id: bands must go"),
    ("thresholds not rising", _set("bands.2.min_score", 3), r"bands\[2\]\.min_score: thresholds"),
    ("lowest not zero", _set("bands.0.min_score", 1), r"bands\[0\]\.min_score: the lowest"),
    ("threshold beyond questions", _set("bands.2.min_score", 8), r"min_score: must be between"),
    ("threshold missing", _delete("bands.1.min_score"), r"bands\[1\]\.min_score: missing"),
    ("threshold a string", _set("bands.1.min_score", "3"), r"min_score: must be an integer"),
]


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in BAD_FILES],
                         ids=[b[0] for b in BAD_FILES])
def test_bad_data_files_are_refused_naming_file_and_field(
    tmp_path: Path, mutate: Mutation, message: str
) -> None:
    data = copy.deepcopy(DARA)
    mutate(data)
    path = write(tmp_path, "local.json", data)
    with pytest.raises(QuestionnaireError, match=message) as caught:
        load_questionnaire(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_the_unmodified_example_is_valid(tmp_path: Path) -> None:
    form = load_questionnaire(write(tmp_path, "local.json", DARA))
    assert form.id == "dara" and len(form.questions) == 7


def _thrive_like() -> dict[str, Any]:
    return {
        "format": 1,
        "id": "judge",
        "title": "Judgement",
        "version": "1",
        "questions": [
            {
                "id": "priority",
                "text": "Priority",
                "kind": "choice",
                "options": [
                    {"value": "standard", "label": "S"},
                    {"value": "high", "label": "H"},
                ],
            },
            {"id": "why", "text": "Why?", "kind": "text"},
        ],
        "scoring": {"rule": "none", "band_question": "priority"},
        "bands": [{"id": "standard", "label": "S"}, {"id": "high", "label": "H"}],
    }


def test_a_judgement_form_validates_its_band_question() -> None:
    assert parse_questionnaire(_thrive_like(), "x").band_question == "priority"

    missing = _thrive_like()
    missing["scoring"]["band_question"] = "nope"
    with pytest.raises(QuestionnaireError, match=r"x: scoring\.band_question: no question"):
        parse_questionnaire(missing, "x")

    text_q = _thrive_like()
    text_q["scoring"]["band_question"] = "why"
    with pytest.raises(QuestionnaireError, match="must name a choice question"):
        parse_questionnaire(text_q, "x")

    mismatch = _thrive_like()
    mismatch["bands"] = [{"id": "standard", "label": "S"}, {"id": "medium", "label": "M"}]
    with pytest.raises(QuestionnaireError, match="must be exactly the band ids"):
        parse_questionnaire(mismatch, "x")

    scored_band = _thrive_like()
    scored_band["bands"][0]["min_score"] = 0
    with pytest.raises(QuestionnaireError, match=r"bands\[0\]\.min_score: unknown field"):
        parse_questionnaire(scored_band, "x")


def test_count_yes_needs_yes_no_questions() -> None:
    data = copy.deepcopy(DARA)
    data["questions"] = [{"id": "n", "text": "Notes", "kind": "text"}]
    data["bands"] = [{"id": "standard", "label": "S", "min_score": 0}]
    with pytest.raises(QuestionnaireError, match="count_yes needs at least one"):
        parse_questionnaire(data, "x")


def test_files_that_are_not_json_are_refused_with_the_place(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": 1,\n  "id": }', encoding="utf-8")
    with pytest.raises(QuestionnaireError, match=r"broken\.json: not valid JSON \(line 2"):
        load_questionnaire(broken)

    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(QuestionnaireError, match=r"binary\.json: not UTF-8"):
        load_questionnaire(binary)

    top_list = write(tmp_path, "list.json", [DARA])
    with pytest.raises(QuestionnaireError, match=r"list\.json: \(top level\): must be an object"):
        load_questionnaire(top_list)

    with pytest.raises(QuestionnaireError, match=r"absent\.json: cannot read"):
        load_questionnaire(tmp_path / "absent.json")

    huge = tmp_path / "huge.json"
    huge.write_text(" " * (300 * 1024), encoding="utf-8")
    with pytest.raises(QuestionnaireError, match=r"huge\.json: file is larger"):
        load_questionnaire(huge)
