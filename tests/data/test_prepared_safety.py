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


# ---------------------------------------------------------------------------------------------- one-line errors
def one_line_error(argv, capsys) -> str:
    from hf_smallllm_cli import main as cli_main

    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-smallllm")]  # beside the progress bar
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"hf-smallllm {argv[0]}: error: "), err
    return lines[0]


MANIFEST_DAMAGE = {
    "no tokenizer": (lambda m: m.pop("tokenizer"), "'tokenizer' must be a mapping"),
    "vocab as text": (lambda m: m["tokenizer"].update(vocab_size="32000"), "tokenizer.vocab_size must be a int"),
    "unknown dtype": (lambda m: m.update(dtype="float64"), "dtype 'float64'"),
    "add_bos as text": (lambda m: m.update(add_bos="yes"), "add_bos must be true or false"),
    "sources a list": (lambda m: m.update(sources=[]), "'sources' must be a mapping"),
    "shard without file": (lambda m: m["sources"]["general"]["shards"][0].pop("file"), "needs 'file' and 'tokens'"),
    "negative tokens": (lambda m: m["sources"]["general"]["shards"][0].update(tokens=-1), "tokens must be a count"),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_a_malformed_manifest_is_one_line_naming_it(prepared, tmp_path, capsys, damage):
    change, message = MANIFEST_DAMAGE[damage]
    folder = planted_copy(prepared, tmp_path, change)
    for command in ("info", "verify"):
        line = one_line_error(["data", command, str(folder)], capsys)
        assert "manifest.json" in line and message in line, line


def test_a_manifest_that_is_not_utf8_is_one_line(prepared, tmp_path, capsys):
    folder = planted_copy(prepared, tmp_path, lambda manifest: None)
    (folder / "manifest.json").write_bytes(b"\xff\xfe{}")
    assert "not UTF-8" in one_line_error(["data", "info", str(folder)], capsys)


SOURCE_FILES = {
    "latin-1 text": ("bad.txt", "café au lait".encode("latin-1"), "not UTF-8 text"),
    "binary": ("blob.txt", bytes(range(256)) * 4, "not UTF-8 text"),
    "corrupt gzip": ("docs.txt.gz", b"\x1f\x8b\x08\x00" + b"\0" * 12, "corrupt compressed file"),
    "not gzip": ("docs.jsonl.gz", b"plain text, not gzip", "not a gzip file"),
    "text field a number": ("docs.jsonl", b'{"text": 5}\n', "field 'text' is int, not text"),
    "record a list": ("docs.jsonl", b"[1, 2]\n", "a record must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(SOURCE_FILES))
def test_unreadable_sources_are_one_line_naming_the_file(corpus_tokenizer, tmp_path, capsys, case):
    import yaml

    name, data, message = SOURCE_FILES[case]
    (tmp_path / name).write_bytes(data)
    corpus_tokenizer.save_pretrained(tmp_path / "tokenizer")
    recipe = {"model": {"family": "tinyllama", "preset": "tiny"}, "tokenizer": str(tmp_path / "tokenizer"),
              "data": {"sources": [{"name": "a", "paths": [str(tmp_path / name)]}], "seq_len": 64,
                       "tokens_per_step": 256}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    line = one_line_error(["data", "prepare", "--recipe", str(tmp_path / "recipe.yaml"), "--output",
                           str(tmp_path / "out"), "--workers", "0"], capsys)
    assert message in line and name in line, line


def test_prepare_options_that_cannot_work_are_one_line(corpus_tokenizer, tmp_path, capsys):
    import yaml

    corpus_tokenizer.save_pretrained(tmp_path / "tokenizer")
    recipe = {"model": {"family": "tinyllama", "preset": "tiny"}, "tokenizer": str(tmp_path / "tokenizer"),
              "data": {"sources": [{**SPEC, "split_by": "sentence"}], "seq_len": 64, "tokens_per_step": 256}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    base = ["data", "prepare", "--recipe", str(tmp_path / "recipe.yaml"), "--workers", "0"]
    assert "split_by='sentence'" in one_line_error([*base, "--output", str(tmp_path / "o")], capsys)
    recipe["data"]["sources"][0]["split_by"] = "line"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "a-file").write_text("x")
    assert "is a file" in one_line_error([*base, "--output", str(tmp_path / "a-file")], capsys)
    assert "shard_chars=0 must be positive" in one_line_error([*base, "--output", str(tmp_path / "o"),
                                                               "--shard-chars", "0"], capsys)
