"""Tests of the project set-up: dependency lists agree, CI runs the documented command,
the shipped sample data loads, and the Makefile has the two documented targets."""

from __future__ import annotations

import re
import warnings

import pytest
import yaml
from conftest import ROOT, SAMPLE_DATA
from packaging.requirements import Requirement

from workbench.data.loading import load_data

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def normalise(requirement: str) -> tuple[str, str]:
    """(canonical name, sorted specifier) so `Foo_Bar >= 1,<2` equals `foo-bar<2,>=1`."""
    parsed = Requirement(requirement)
    name = re.sub(r"[-_.]+", "-", parsed.name).lower()
    return name, ",".join(sorted(str(s) for s in parsed.specifier))


def test_normalise_ignores_spelling_but_not_versions():
    assert normalise("Foo_Bar >= 1.0, <2") == normalise("foo-bar<2,>=1.0")
    assert normalise("foo>=1.0") != normalise("foo>=1.1")


# --- environment.yml against pyproject.toml --------------------------------------------


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def conda_pip_dependencies() -> list[str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "environment.yml should have exactly one pip section"
    return pip_sections[0]


def test_environment_yml_pip_section_equals_pyproject_dependencies_and_dev_extra():
    project = pyproject()["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["dev"]
    conda = conda_pip_dependencies()
    assert sorted(map(normalise, conda)) == sorted(map(normalise, expected))
    assert len(conda) == len(set(map(normalise, conda))), "a package is listed twice"


# --- CI runs the documented command -----------------------------------------------------


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.startswith("#") and not line.startswith("set ")
    ]


def readme_commands(text: str) -> set[str]:
    """Lines of fenced code blocks (without a `$ ` prompt) and inline `code` spans."""
    commands = set()
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"^\$\s+", "", line.strip())
            commands.add(re.sub(r"\s+#.*$", "", line))
    commands.update(span.strip() for span in re.findall(r"`([^`\n]+)`", text))
    return commands


def test_ci_runs_one_make_command():
    commands = ci_commands()
    assert len(commands) == 1, commands
    assert commands[0].startswith("make ")


def test_ci_runs_exactly_a_command_from_the_readme():
    documented = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    for command in ci_commands():
        assert command in documented, f"`{command}` from .ci/run is not shown in README.md"


def test_readme_command_parser():
    text = "Run\n\n```bash\n$ make demo   # fine-tune\nmake test\n```\n\nor `make lint`."
    assert {"make demo", "make test", "make lint"} <= readme_commands(text)


# --- sample data ------------------------------------------------------------------------


def documented_row_counts() -> dict[str, int]:
    """{file name: rows} from the table in sample_data/README.md."""
    text = (SAMPLE_DATA / "README.md").read_text(encoding="utf-8")
    return {name: int(rows) for name, rows in re.findall(r"^\| `([^`/]+)` \| (\d+) \|", text, re.M)}


SHIPPED = sorted(
    p for p in SAMPLE_DATA.iterdir() if p.suffix in (".jsonl", ".json", ".csv", ".parquet")
)


def test_every_shipped_data_file_is_documented():
    assert "support_tickets.jsonl" in [p.name for p in SHIPPED]  # the notebooks' data is found
    assert sorted(documented_row_counts()) == [p.name for p in SHIPPED]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_data_file_loads_without_problems(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dropped row would warn
        data = load_data(path, verbose=False)
    assert data.dropped == []
    assert len(data) == documented_row_counts()[path.name]


# --- Makefile ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["demo", "test"])
def test_makefile_has_target(target):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{target}:", makefile, re.M), f"no `{target}:` rule"
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M)
    assert phony and target in phony.group(1).split()


# The public names of `workbench` before the library was grouped by stage (0.1.0): each must
# still import from the package, with the same meaning.
PUBLIC_BEFORE_THE_REGROUPING = [
    "DEFAULT_MODEL",
    "TEMPLATES",
    "AllLabelsMaskedError",
    "CompletionCollator",
    "DataValidationError",
    "Decoding",
    "Evaluation",
    "ElasticWeightConsolidation",
    "Examples",
    "ForgettingProbe",
    "Hyperparameters",
    "Method",
    "ModelLoadError",
    "ParameterCount",
    "Problem",
    "Run",
    "Template",
    "TaskScores",
    "TemplateError",
    "WorkbenchError",
    "answer_contains",
    "compare",
    "compare_before_after",
    "count_parameters",
    "dataset_stats",
    "default_template",
    "evaluate_model",
    "few_shot_prompt",
    "fisher_diagonal",
    "fisher_ewc",
    "forgetting_table",
    "generate",
    "get_template",
    "linear_layer_names",
    "count_trainable",
    "estimate_memory",
    "MemoryEstimate",
    "hidden_state_embedder",
    "learned_retained",
    "leave_one_task_out",
    "load_data",
    "load_model",
    "loto_table",
    "mix_tasks",
    "nearest_examples",
    "prompting_baselines",
    "prompting_table",
    "resume_run",
    "save_forgetting",
    "split_data",
    "task_folds",
    "token_view",
    "token_view_html",
    "token_view_text",
    "tokenize_examples",
    "tokenize_pair",
    "train",
    "write_report",
]


def test_every_public_name_from_before_the_regrouping_still_imports():
    import workbench

    assert len(PUBLIC_BEFORE_THE_REGROUPING) == 58
    missing = [n for n in PUBLIC_BEFORE_THE_REGROUPING if n not in workbench.__all__]
    assert missing == []
    namespace: dict = {}
    exec("from workbench import *", namespace)  # what a notebook's star import gets
    assert set(PUBLIC_BEFORE_THE_REGROUPING) <= set(namespace)
    assert callable(workbench.train) and workbench.Run.__module__ == "workbench.runs.run"
