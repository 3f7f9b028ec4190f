"""workbench.runs.directory: atomic writes stay whole when threads write one file at once."""

from __future__ import annotations

import threading

from workbench.runs.files import write_atomic


def test_threads_writing_one_file_at_once_never_collide(tmp_path):
    target = tmp_path / "status.json"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(200):
                write_atomic(target, f"writer {n} line {i}\n" * 50)
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = target.read_text().splitlines()
    assert len(lines) == 50 and len(set(lines)) == 1  # one writer's whole text, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left
