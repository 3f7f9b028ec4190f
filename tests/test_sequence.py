"""Tasks in sequence on the tiny model: stages recorded as runs, the per-stage table, replay
mixing, the remedies, and the errors a sequence can meet before it trains."""

from __future__ import annotations

import pytest
import yaml
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.data.splits import mix_tasks
from workbench.evaluation.forgetting import ForgettingProbe
from workbench.model.generation import Decoding
from workbench.training.remedies import REMEDIES, StageContext, replay_mix
from workbench.training.sequence import train_sequence
from workbench.training.synaptic import IMPORTANCE_FILE

LORA = workbench.Method(r=4, dropout=0.0)


@pytest.fixture(scope="module")
def mixed():
    return workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)


def _task(data, name: str, start: int, stop: int):
    return data.select([i for i, r in enumerate(data.rows) if r["task"] == name][start:stop])


@pytest.fixture(scope="module")
def stages(mixed):
    return [_task(mixed, "capital", 0, 20), _task(mixed, "antonym", 0, 20)]


@pytest.fixture(scope="module")
def probe(mixed):
    target = _task(mixed, "capital", 30, 33)
    target = mix_tasks({"capital": target, "antonym": _task(mixed, "antonym", 50, 53)})
    return ForgettingProbe(
        target=target,
        probe=_task(mixed, "date_iso", 0, 3),
        rows_per_task=2,
        decoding=Decoding(max_new_tokens=3),
    )


def _sequence(tiny_model_dir, stages, tmp_path, **options):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    settings = dict(
        method=LORA,
        hyperparameters=quick(max_steps=2, eval_every=2),
        run_root=tmp_path / "sequence",
        samples=1,
    )
    return train_sequence(model, tokenizer, stages, **{**settings, **options})


def test_each_later_stage_is_a_run_that_records_the_run_it_continued(
    tiny_model_dir, stages, probe, tmp_path
):
    result = _sequence(tiny_model_dir, stages, tmp_path, probe=probe, remedy="si")
    assert [r.status for r in result.runs] == ["finished", "finished"]
    configs = [yaml.safe_load((r.run_dir / "config.yaml").read_text()) for r in result.runs]
    assert "continued_from" not in configs[0]
    assert configs[1]["continued_from"] == str(result.runs[0].run_dir)
    assert [c["stage"] for c in configs] == ["sft", "sft"]
    assert configs[1]["regularizer"]["kind"] == "si"
    assert all((r.run_dir / IMPORTANCE_FILE).is_file() for r in result.runs)
    # the second stage continued the first one's adapter, on the very same model
    assert result.runs[1].model is result.runs[0].model
    assert result.runs[1].run_dir.name == "stage-2-antonym"


def test_the_table_has_a_row_per_stage_with_learned_kept_and_retained(
    tiny_model_dir, stages, probe, tmp_path
):
    result = _sequence(tiny_model_dir, stages, tmp_path, probe=probe)
    table = result.table()
    assert list(table.index) == ["base", "after stage 1", "after stage 2"]
    assert list(table["trained"]) == ["", "capital", "antonym"]
    for column in ("capital", "antonym", "date_iso", "learned", "kept", "retained"):
        assert column in table.columns
    after_two = result.scores[2]
    assert table.loc["after stage 2", "learned"] == pytest.approx(
        (after_two.score["capital"] + after_two.score["antonym"]) / 2
    )
    assert table.loc["after stage 2", "kept"] == pytest.approx(after_two.score["capital"])
    assert table.loc["after stage 1", "learned"] == pytest.approx(result.scores[1].score["capital"])
    assert table["kept"].isna().tolist() == [True, True, False]  # nothing earlier to keep yet
    # each stage's run directory keeps the table so far (its report shows it)
    stored = result.runs[1].directory.read_json("forgetting.json")
    assert len(stored["rows"]) == 3


def test_replay_mixes_the_share_of_earlier_rows_into_the_next_stage(stages):
    mixed = replay_mix(stages[1], [stages[0]], 0.2, seed=0)
    tasks = mixed.tasks
    assert tasks["antonym"] == len(stages[1])  # every row of the stage itself
    assert tasks["capital"] == 5  # 20 / (20 + 5) = 80 % new, 20 % replayed
    assert tasks["capital"] / len(mixed) == pytest.approx(0.2)
    replayed = [r for r in mixed.rows if r["task"] == "capital"]
    assert all(r in stages[0].rows for r in replayed)
    assert replay_mix(stages[1], [stages[0]], 0.0).rows == stages[1].rows


def test_replay_takes_all_earlier_rows_when_they_are_fewer_than_the_share(stages):
    few = stages[0].select(range(2))
    mixed = replay_mix(stages[1], [few], 0.5)
    assert mixed.tasks == {"antonym": 20, "capital": 2}


def test_a_replay_sequence_trains_the_second_stage_on_the_mix(tiny_model_dir, stages, tmp_path):
    result = _sequence(tiny_model_dir, stages, tmp_path, remedy="replay", replay_share=0.2)
    trained = result.runs[1].directory.load_rows("train")
    assert trained.tasks == {"antonym": 20, "capital": 5}
    assert result.runs[0].directory.load_rows("train").tasks == {"capital": 20}
    with pytest.raises(workbench.WorkbenchError, match="without a `probe`"):
        result.table()


def test_an_ewc_sequence_anchors_the_adapter_and_stores_its_tensors(
    tiny_model_dir, stages, tmp_path
):
    result = _sequence(tiny_model_dir, stages, tmp_path, remedy="ewc", options={"max_rows": 4})
    config = yaml.safe_load((result.runs[1].run_dir / "config.yaml").read_text())
    assert config["regularizer"]["kind"] == "ewc"
    assert (result.runs[1].run_dir / config["regularizer"]["tensors"]).is_file()
    assert (
        len((result.runs[1].run_dir / config["regularizer"]["reference"]).read_text().split("\n"))
        == 4 + 1
    )  # the stage-1 rows the Fisher was measured on, one a line
    assert "regularizer" not in yaml.safe_load((result.runs[0].run_dir / "config.yaml").read_text())


def test_an_lwf_sequence_holds_the_second_stage_to_the_first_stages_outputs(
    tiny_model_dir, stages, tmp_path
):
    result = _sequence(
        tiny_model_dir, stages, tmp_path, remedy="lwf", strength=2.0, options={"lwf_rows": 4}
    )
    config = yaml.safe_load((result.runs[1].run_dir / "config.yaml").read_text())
    assert config["regularizer"]["kind"] == "lwf" and config["regularizer"]["strength"] == 2.0
    first_stage = {r["input"] for r in stages[0].rows}
    saved = (result.runs[1].run_dir / config["regularizer"]["reference"]).read_text().splitlines()
    assert len(saved) == 4 and all(yaml.safe_load(line)["input"] in first_stage for line in saved)
    assert "regularizer" not in yaml.safe_load((result.runs[0].run_dir / "config.yaml").read_text())


def test_a_new_remedy_joins_through_the_remedies_table(
    tiny_model_dir, stages, tmp_path, monkeypatch
):
    seen = []

    def halve(context: StageContext):
        seen.append((context.index, len(context.earlier), len(context.runs)))
        return REMEDIES[None](context)

    monkeypatch.setitem(REMEDIES, "halve", halve)
    _sequence(tiny_model_dir, stages, tmp_path, remedy="halve")
    assert seen == [(0, 0, 0), (1, 1, 1)]


def test_mistakes_are_reported_before_anything_trains(tiny, stages, probe):
    model, tokenizer = tiny
    with pytest.raises(workbench.WorkbenchError, match="`remedy`='lwf2' is not known"):
        train_sequence(model, tokenizer, stages, remedy="lwf2")
    with pytest.raises(workbench.WorkbenchError, match="2 settings for 3 stages"):
        train_sequence(model, tokenizer, [*stages, stages[0]], hyperparameters=[quick()] * 2)
    probed = [stages[0], probe.probe]
    with pytest.raises(workbench.WorkbenchError, match=r"stage 2 trains probe task\(s\)"):
        train_sequence(model, tokenizer, probed, probe=probe)
    with pytest.raises(workbench.WorkbenchError, match="`validation` has 1 entries for 2"):
        train_sequence(model, tokenizer, stages, validation=[None])
    assert not hasattr(model, "peft_config")  # nothing was adapted, nothing trained
