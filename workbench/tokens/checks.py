"""Pre-flight checks on a dataset before training: what would quietly spoil a run.

`check_dataset` tokenises every row once, as training does, and checks for rows with nothing
to learn, learned spans without a stop token, a generation prompt unlike the trained prefix,
conversations whose earlier turns could not be found (only the last is learned), truncation
of learned tokens, duplicates and leakage, empty or unused columns, and the labels
of classification-like tasks. Each `Finding` names the row (`data.jsonl:17`), what and the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.tokens.chat import TurnsFallbackWarning, end_of_turn
from workbench.tokens.row_checks import (
    ROWS_NAMED,
    SEVERITIES,
    Finding,
    duplicate_rows,
    empty_fields,
    label_findings,
    leaked_rows,
    named_findings,
    unused_columns,
)
from workbench.tokens.row_checks import Severity as Severity  # the public names, re-exported
from workbench.tokens.row_checks import findings_summary as findings_summary
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import (
    IGNORE_INDEX,
    TokenizedData,
    TokenizedExample,
    TruncationSide,
    tokenize_segments,
)

WHOLE = 10**9  # a max_length that keeps every row whole


@dataclass
class _Row:
    """A row's tokens within max_length and whole; labels mark the learned tokens."""

    index: int
    where: str
    fitted: TokenizedExample
    whole: TokenizedExample


def check_dataset(
    examples: Examples,
    template: Template | str | None = None,
    tokenizer=None,
    *,
    validation: Examples | None = None,
    max_length: int = 256,
    completion_only: bool = True,
    truncation_side: TruncationSide = "right",
    add_eos: bool = True,
    tokenized: TokenizedData | None = None,
) -> list[Finding]:
    """Every check on `examples` (and `validation`, for leakage and unseen labels), errors
    first. `template` defaults to the one that suits the data's format; without a tokenizer
    only the checks on the text run. `tokenized`: the rows as `tokenize_examples` gave them
    with these settings (training passes its own, so rows are not tokenised twice); used with
    `completion_only`, whose labels mark the learned tokens."""
    if tokenized is not None and len(tokenized) != len(examples):
        raise WorkbenchError(
            f"`tokenized` has {len(tokenized)} rows, the examples {len(examples)}."
        )
    if examples.format == "preference":  # checked as DPO trains them: prompt + chosen answer
        examples, validation = _chosen(examples), _chosen(validation) if validation else None
    template = get_template(template, examples.format)
    findings = duplicate_rows(examples) + leaked_rows(examples, validation)
    findings += empty_fields(examples, template) + unused_columns(examples, template)
    findings += label_findings(examples, validation, template)
    if tokenizer is None:
        what = "no tokenizer yet: the checks on lengths and the loss mask did not run"
        fix = "Load a model (in code: pass its `tokenizer`); these checks then run too."
        findings.append(Finding("info", "tokens", what, examples.source, fix))
    else:
        given = tokenized.examples if tokenized is not None and completion_only else None
        rows, problems = _tokenized_rows(
            examples, template, tokenizer, given, max_length, truncation_side, add_eos
        )
        findings += problems + _nothing_to_learn(rows, examples.source, completion_only)
        findings += _missing_stop(rows, examples.source, template, tokenizer)
        findings += _prompt_differs(rows, examples, template, tokenizer)
        findings += _turns_found(rows, examples.source)
        findings += _truncated_learning(rows, examples.source, max_length, truncation_side)
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def _chosen(pairs: Examples) -> Examples:
    """Preference rows as the rows DPO learns: the instruction (or the prompt) and the chosen
    answer; the rejected answer is not learned."""
    instructed = all(row.get("instruction") for row in pairs.rows)
    key, fmt = ("output", "alpaca") if instructed else ("completion", "prompt_completion")
    rows = [
        {**{k: v for k, v in row.items() if k not in ("chosen", "rejected")}, key: row["chosen"]}
        for row in pairs.rows
    ]
    return Examples(rows, fmt, pairs.source, list(pairs.locations), sources=pairs.sources)


# --- tokens -------------------------------------------------------------------------------


def _tokenized_rows(examples, template, tokenizer, given, max_length, side, add_eos):
    """(each row's tokens, findings for rows the template cannot render). A row is tokenised
    whole once, and again within max_length only when it is longer."""
    rows, failed = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, row in enumerate(examples.rows):
            where = examples.where(i)
            fitted = given[i] if given is not None else None
            if fitted is not None and fitted.truncated == "none":
                rows.append(_Row(i, where, fitted, fitted))
                continue
            try:
                cut = template.cut(row, tokenizer, where=where)
            except WorkbenchError as error:
                failed.append((where, str(error).removeprefix(f"{where}: ")))
                continue
            segments = cut.segments
            if not add_eos:
                segments = [replace(s, eos=False) for s in segments]
            whole = tokenize_segments(segments, tokenizer, max_length=WHOLE)
            if fitted is None and whole.full_length > max_length:
                fitted = tokenize_segments(
                    segments, tokenizer, max_length=max_length, truncation_side=side
                )
            whole = replace(whole, turns=cut.turns)
            fitted = replace(fitted, turns=cut.turns) if fitted is not None else None
            rows.append(_Row(i, where, fitted or whole, whole))
    findings = named_findings(
        failed, "error", "render", "", examples.source
    )  # the message says the fix
    # a conversation cut to its last turn is reported row by row (`_turns_found`)
    messages = (str(w.message) for w in caught if w.category is not TurnsFallbackWarning)
    for message in dict.fromkeys(messages):
        findings.append(Finding("warning", "render", message, examples.source))
    return rows, findings


def _learned(item: TokenizedExample) -> list[bool]:
    return [label != IGNORE_INDEX for label in item.labels]


def _nothing_to_learn(rows: list[_Row], source: str, completion_only: bool) -> list[Finding]:
    """Rows where no token carries loss, and the share of tokens that do."""
    if not rows:
        return []
    counts = [r.fitted.loss_tokens if completion_only else len(r.fitted.input_ids) for r in rows]
    why = {True: "max_length cut every learned token", False: "the row has no learned text"}
    empty = [(r.where, why[r.whole.loss_tokens > 0]) for r, n in zip(rows, counts) if n == 0]
    severity = "error" if len(empty) == len(rows) else "warning"
    fix = "Give the row a response, or raise max_length so that its response fits."
    findings = named_findings(empty, severity, "nothing_to_learn", fix, source)
    total = sum(len(r.fitted.input_ids) for r in rows)
    what = f"{sum(counts)} of {total} tokens ({sum(counts) / max(total, 1):.0%}) carry loss"
    findings.append(Finding("info", "learned_share", what, source))
    return findings


def _missing_stop(rows: list[_Row], source: str, template: Template, tokenizer) -> list:
    """Rows with a learned span that ends neither with EOS nor with the end-of-turn marker:
    the model would never learn to stop."""
    marker = end_of_turn(tokenizer).strip() if template.use_chat_template else ""
    stops = {tokenizer.eos_token_id} - {None}
    marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"] if marker else []
    if len(marker_ids) == 1:
        stops.add(marker_ids[0])
    wanted = " or ".join(repr(t) for t in (tokenizer.eos_token, marker) if t) or "a stop token"
    missing = []
    for r in rows:
        ids = r.whole.input_ids
        for end in _learned_ends(r.whole):
            tail = "" if ids[end] in stops else tokenizer.decode(ids[max(end - 7, 0) : end + 1])
            if not tail or (marker and tail.rstrip().endswith(marker)):
                continue
            missing.append((r.where, f"a learned span ends with {tail[-20:]!r}, not {wanted}"))
            break
    fix = "Keep add_eos=True, or end the template's response with a stop marker."
    if template.use_chat_template:
        fix = "Use a chat template that closes assistant turns (inside its generation marks)."
    return named_findings(missing, "error", "missing_stop", fix, source)


def _learned_ends(item: TokenizedExample) -> list[int]:
    """The position of the last learned token of each learned segment."""
    learned, segment_of, n = _learned(item), item.segment_of, len(item.input_ids)
    return [
        p
        for p in range(n)
        if learned[p] and (p + 1 == n or not learned[p + 1] or segment_of[p + 1] != segment_of[p])
    ]


def _prompt_differs(rows: list[_Row], examples: Examples, template: Template, tokenizer):
    """Rows whose generation prompt, tokenised as generation does, is not the token prefix
    training puts before the last learned segment."""
    bos = getattr(tokenizer, "bos_token", None)
    prompts: dict[int, str] = {}
    for k, r in enumerate(rows):
        row = examples.rows[r.index]
        try:
            prompt = template.render_prompt(row, tokenizer, r.where)
            # A text template's prompt is one segment, tokenised alone as generation does:
            # the same non-empty text gives the same ids, so only other texts need tokens.
            if template.use_chat_template or template.segments(row)[0].text != prompt or not prompt:
                prompts[k] = prompt
        except WorkbenchError:
            continue  # reported by the render check
    generated = {}
    for add_special in (True, False):  # one batch per setting: much faster than row by row
        keys = [k for k, p in prompts.items() if add_special != bool(bos and p.startswith(bos))]
        if keys:
            ids = tokenizer([prompts[k] for k in keys], add_special_tokens=add_special)
            generated.update(zip(keys, ids["input_ids"]))
    differing = []
    for k, ids in generated.items():
        trained = _before_last_learned(rows[k].whole)
        if trained is not None and trained != ids:
            differing.append((rows[k].where, _first_difference(ids, trained, tokenizer)))
    fix = "Make the template (or chat template) render the prompt as it writes it for training."
    return named_findings(differing, "warning", "prompt_differs", fix, examples.source)


def _first_difference(generated: list[int], trained: list[int], tokenizer) -> str:
    """Where two id lists first differ, with the token each has there."""
    short = min(len(generated), len(trained))
    at = next((p for p in range(short) if generated[p] != trained[p]), short)
    gen, train = (
        repr(tokenizer.decode(x[at : at + 1])) if x[at:] else "(end)" for x in (generated, trained)
    )
    return (
        f"the generation prompt differs from training at token {at}: generation has {gen}, "
        f"training has {train}"
    )


def _before_last_learned(item: TokenizedExample) -> list[int] | None:
    """The ids before the last learned segment (None when nothing is learned)."""
    learned = _learned(item)
    if True not in learned:
        return None
    last = item.segment_of[len(learned) - 1 - learned[::-1].index(True)]
    return item.input_ids[: item.segment_of.index(last)]


def _turns_found(rows: list[_Row], source: str) -> list[Finding]:
    """Conversations cut to their last assistant turn, row by row (a reply the chat template
    rewrites, so the earlier turns cannot be found), and how many were found by offsets."""
    last = [(r.where, _LAST_TURN_ONLY) for r in rows if r.whole.turns == "last turn only"]
    fix = (
        "Use a chat template that writes each reply as it is (or marks replies with "
        "{% generation %}); or set assistant_turns='last' if only the last reply should be learned."
    )
    findings = named_findings(last, "warning", "last_turn_only", fix, source)
    found = sum(r.whole.turns == "found by offsets" for r in rows)
    if found:
        what = (
            f"{found} of {len(rows)} conversations: the chat template is not prefix-stable, so "
            "every assistant turn was found by its text in the rendering of the whole conversation"
        )
        findings.append(Finding("info", "turns", what, source))
    return findings


_LAST_TURN_ONLY = (
    "an assistant reply is not in the chat template's rendering of the conversation (the "
    "template rewrites it), so only the last assistant turn is learned, followed by EOS"
)


def _truncated_learning(rows: list[_Row], source: str, max_length: int, side: str) -> list:
    """Rows that lose learned tokens to max_length, and how many they lose in all."""
    cut = [r for r in rows if r.fitted.truncated == "response"]
    if not cut:
        return []
    lost = sum(r.whole.loss_tokens - r.fitted.loss_tokens for r in cut)
    longest = max(r.whole.full_length for r in cut)
    some = ", ".join(r.where for r in cut[:ROWS_NAMED]) + (", ..." if len(cut) > ROWS_NAMED else "")
    what = (
        f"{len(cut)} of {len(rows)} rows lose learned tokens to max_length={max_length} (cut on "
        f"the {side}), {lost} learned tokens in all: {some}"
    )
    fix = f"Raise max_length to {longest} (the longest such row)" + (
        ", or use truncation_side='left' to cut prompts first." if side == "right" else "."
    )
    return [Finding("warning", "truncation", what, cut[0].where if len(cut) == 1 else source, fix)]
