"""The bottom layer for run files: writes are whole or absent, checkpoints are found by name and completeness, and
the metrics file survives a run killed mid-line."""

import json

import pytest

from hf_smallllm import runfiles


class Boom(Exception):
    pass


def test_atomic_file_write_keeps_the_old_content_when_the_writer_fails(tmp_path):
    target = tmp_path / "sub" / "result.json"
    runfiles.write_json_atomic(target, {"score": 1, "name": "模型"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"score": 1, "name": "模型"}
    with pytest.raises(Boom), runfiles.atomic_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == target.parent  # same folder, same suffix (format inference)
        tmp.write_text("half")
        raise Boom
    assert json.loads(target.read_text(encoding="utf-8"))["score"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]  # no temporary left behind


def test_atomic_write_replaces_a_hard_link_instead_of_writing_through_it(tmp_path):
    original, link = tmp_path / "original.json", tmp_path / "link.json"
    original.write_text("{}")
    link.hardlink_to(original)
    runfiles.write_text_atomic(link, '{"new": true}')
    assert original.read_text() == "{}" and link.read_text() == '{"new": true}'


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    output = tmp_path / "model"
    with runfiles.atomic_folder(output) as staging:
        (staging / "config.json").write_text("v1")
    assert (output / "config.json").read_text() == "v1"
    with pytest.raises(Boom), runfiles.atomic_folder(output) as staging:
        (staging / "config.json").write_text("v2")
        raise Boom
    assert (output / "config.json").read_text() == "v1"
    with runfiles.atomic_folder(output) as staging:
        (staging / "weights.bin").write_text("v3")
    assert sorted(p.name for p in output.iterdir()) == ["weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_checkpoints_are_complete_only_with_their_trainer_state(tmp_path):
    for step in (10, 2, 30):
        folder = runfiles.checkpoint_dir(tmp_path, step)
        folder.mkdir()
        if step != 30:  # checkpoint-30 is still being written
            (folder / runfiles.TRAINER_STATE_NAME).write_text("{}")
    runfiles.temporary_checkpoint_dir(tmp_path, 40).mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    assert [step for step, _ in runfiles.list_checkpoints(tmp_path)] == [2, 10]
    assert runfiles.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert runfiles.latest_checkpoint(tmp_path / "missing") is None
    assert runfiles.checkpoint_step(tmp_path / "checkpoint-10") == 10 and runfiles.checkpoint_step("final") is None
    assert runfiles.run_dir_of(tmp_path / "checkpoint-10") == tmp_path and runfiles.run_dir_of(tmp_path) == tmp_path


def test_metrics_skip_a_line_cut_off_by_a_crash(tmp_path):
    path = tmp_path / runfiles.METRICS_NAME
    runfiles.append_metrics(path, {"step": 1, "tokens": 4096, "loss": 5.0})
    runfiles.append_metrics(path, {"step": 2, "tokens": 8192, "eval/kjv/loss": 4.5})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 3, "lo')
    assert runfiles.read_metrics(path) == [{"step": 1, "tokens": 4096, "loss": 5.0},
                                           {"step": 2, "tokens": 8192, "eval/kjv/loss": 4.5}]
    assert runfiles.read_metrics(tmp_path / "none.jsonl") == []
    with pytest.raises(ValueError, match="'step'"):
        runfiles.append_metrics(path, {"loss": 1.0})


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    """Prepared shards, manifests and checkpoint files are readable by whom the umask says (mkstemp alone gives
    0600, which hid a shared cluster's data from the rest of its group)."""
    import os
    import stat

    from hf_smallllm.runfiles import write_json_atomic, write_text_atomic

    previous = os.umask(umask)
    try:
        paths = [write_json_atomic(tmp_path / "manifest.json", {"a": 1}), write_text_atomic(tmp_path / "x.txt", "x")]
    finally:
        os.umask(previous)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
