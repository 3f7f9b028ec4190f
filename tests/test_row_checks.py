"""The checks on rows before any token: leakage is an error past a tenth of the validation rows,
and repeated raw-text documents are a warning whose fix says how to drop them."""

from __future__ import annotations

import workbench
from workbench.tokens.row_checks import LEAKED_SHARE, duplicate_rows, leaked_rows


def rows(words: list[str]) -> workbench.Examples:
    return workbench.load_data(
        [{"instruction": "Repeat the word.", "input": w, "output": w} for w in words],
        verbose=False,
    )


def test_leakage_is_a_warning_below_a_tenth_of_the_validation_rows_and_an_error_above():
    validation = rows([f"word{i}" for i in range(20)])
    assert LEAKED_SHARE == 0.1
    two = rows(["word0", "word1", "other"])  # 2 of 20 validation rows trained on: 10%
    assert {f.severity for f in leaked_rows(two, validation)} == {"warning"}
    three = rows(["word0", "word1", "word2", "other"])  # 3 of 20: 15%
    findings = leaked_rows(three, validation)
    assert {f.severity for f in findings} == {"error"} and len(findings) == 3
    assert "3 of the 20 validation rows (15%, more than 10%)" in findings[0].fix
    assert leaked_rows(rows(["other"]), validation) == []


def test_repeated_documents_are_a_warning_that_says_how_to_drop_them():
    texts = [{"text": "Licence text."}, {"text": "Chapter one."}, {"text": "licence  TEXT."}]
    (finding,) = duplicate_rows(workbench.load_data(texts, verbose=False))
    assert finding.severity == "warning"
    assert "drop_duplicates=True" in finding.fix and "--drop-duplicates" in finding.fix
