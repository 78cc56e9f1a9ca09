"""Issue 31, data loss and escapes: a source name or a manifest entry can never make `data prepare` delete or write,
or training read, anything outside the prepared folder; one preparation at a time per folder. (The run folder's
lock and recipe source names: tests/train/test_run_safety.py.)"""

import json
import shutil

import pytest

from hf_smallllm.data import PreparedDataError, open_prepared, read_manifest, tokenizer_identity
from hf_smallllm.data.prepare import prepare_sources
from hf_smallllm.runfiles import FolderLock

SPEC = {"name": "general", "paths": ["bundled:validation/en_kjv.txt"], "split_by": "line"}


@pytest.fixture(scope="module")
def prepared(corpus_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared") / "tokens"
    prepare_sources([SPEC], corpus_tokenizer, folder, workers=0, shard_chars=10_000, progress=False)
    return folder


def planted_copy(prepared, tmp_path, change):
    """A copy of the prepared folder whose manifest `change` edits (what a folder from elsewhere may hold)."""
    folder = tmp_path / "tokens"
    shutil.copytree(prepared, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/abs", "~home", ""])
def test_a_source_name_that_is_not_one_folder_name_is_refused(corpus_tokenizer, tmp_path, name):
    with pytest.raises(ValueError, match="source name"):
        prepare_sources([{**SPEC, "name": name}], corpus_tokenizer, tmp_path / "out", workers=0, progress=False)
    assert not any(p.name != ".lock" for p in (tmp_path / "out").iterdir())
    assert not (tmp_path / "x").exists()


def test_overwrite_never_deletes_a_folder_outside(prepared, corpus_tokenizer, tmp_path):
    """Before: a manifest listing a source named `../victim` made `prepare --overwrite` rmtree the sibling."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")

    def plant(manifest):
        manifest["sources"]["../victim"] = manifest["sources"]["general"]
        manifest["add_bos"] = not manifest["add_bos"]  # a conflict, so that --overwrite clears the old sources

    folder = planted_copy(prepared, tmp_path, plant)
    with pytest.raises(PreparedDataError, match="source name '../victim'"):
        prepare_sources([SPEC], corpus_tokenizer, folder, workers=0, overwrite=True, progress=False)
    assert (victim / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("where", ["../outside/planted.tokens", "/etc/passwd", "general/../../x.tokens"])
def test_a_manifest_shard_outside_the_folder_is_refused_before_anything_is_opened(prepared, corpus_tokenizer,
                                                                                   tmp_path, where):
    def plant(manifest):
        manifest["sources"]["general"]["shards"][0]["file"] = where

    folder = planted_copy(prepared, tmp_path, plant)
    with pytest.raises(PreparedDataError, match="not a relative path inside"):
        read_manifest(folder)
    with pytest.raises(PreparedDataError, match="not a relative path inside"):
        open_prepared(folder, "general", tokenizer_identity(corpus_tokenizer), False, SPEC)


def test_a_symlinked_shard_leading_outside_is_refused(prepared, corpus_tokenizer, tmp_path):
    folder = planted_copy(prepared, tmp_path, lambda manifest: None)
    outside = tmp_path / "outside.tokens"
    outside.write_bytes(b"\0" * 64)
    first = json.loads((folder / "manifest.json").read_text())["sources"]["general"]["shards"][0]["file"]
    (folder / first).unlink()
    (folder / first).symlink_to(outside)
    with pytest.raises(PreparedDataError, match="leads outside"):
        read_manifest(folder)


def test_a_second_preparation_of_the_same_folder_is_refused_in_one_line(corpus_tokenizer, tmp_path):
    folder = tmp_path / "tokens"
    with FolderLock(folder, "preparing data"):  # what a preparation running in another process holds
        with pytest.raises(PreparedDataError, match=r"in use by preparing data \(pid \d+"):
            prepare_sources([SPEC], corpus_tokenizer, folder, workers=0, progress=False)
    prepare_sources([SPEC], corpus_tokenizer, folder, workers=0, progress=False)  # free again: it runs
    assert read_manifest(folder)["sources"]["general"]["complete"]
