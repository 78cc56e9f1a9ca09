"""Prepared token shards: what `data prepare` writes, that training rows read from them equal the on-the-fly rows
bit for bit, that N simulated processes see the rows of one, exact resume at any step, resumable preparation, and
the errors for a wrong tokenizer, a truncated or corrupt shard and a folder of another corpus."""

import json

import numpy as np
import pytest
import torch

from hf_smallllm.data import (
    DocumentSource,
    MixtureSchedule,
    OnTheFlyTokens,
    PackedBatchStream,
    PreparedDataError,
    SequenceLengthSchedule,
    open_prepared,
    read_manifest,
    tokenizer_identity,
    verify_prepared,
)
from hf_smallllm.data import prepare as prepare_module
from hf_smallllm.data.prepare import prepare_sources
from hf_smallllm_cli import main as cli_main

SPECS = [
    {"name": "general", "paths": ["bundled:validation/en_kjv.txt"], "split_by": "line"},
    {"name": "stem", "paths": ["bundled:validation/code_python.jsonl"]},
]
PHASES = [{"until": 0.5, "weights": {"general": 1.0}},
          {"until": 1.0, "weights": {"general": 0.9, "stem": 0.1}, "end_weights": {"general": 0.6, "stem": 0.4}}]
LENGTHS = [{"until": 0.75, "seq_len": 32}, {"until": 1.0, "seq_len": 128}]  # BTLM-style 4x switch
STEPS, TOKENS_PER_STEP = 16, 1024


@pytest.fixture(scope="module")
def prepared(corpus_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    prepare_sources(SPECS, corpus_tokenizer, folder, workers=0, shard_chars=10_000, progress=False)
    return folder


def make_stream(tokenizer, folder=None, world_size=1, rank=0, accumulation=1, packing="document", seed=0):
    identity = tokenizer_identity(tokenizer)
    sources = {spec["name"]: (open_prepared(folder, spec["name"], identity, False, spec) if folder else
                              OnTheFlyTokens(DocumentSource.from_dict(spec), tokenizer)) for spec in SPECS}
    mixture = MixtureSchedule(PHASES, STEPS, sources=list(sources))
    lengths = SequenceLengthSchedule(LENGTHS, STEPS, TOKENS_PER_STEP)
    return PackedBatchStream(sources, mixture, lengths, STEPS, accumulation, world_size, rank, seed,
                             packing=packing, eos_token_id=tokenizer.eos_token_id)


def global_batches(stream, accumulation_times_world=1):
    """The stream's micro-batches joined back into one tensor per step and key."""
    batches = list(stream)
    per_step = len(batches) // STEPS
    return [{key: torch.cat([b[key] for b in batches[s * per_step:(s + 1) * per_step]])
             for key in ("input_ids", "labels", "position_ids")} for s in range(STEPS)]


def test_manifest_records_tokenizer_dtype_boundaries_and_counts(prepared, corpus_tokenizer):
    manifest = read_manifest(prepared)
    assert manifest["format_version"] == 1 and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["sha256"] == tokenizer_identity(corpus_tokenizer)["sha256"]
    assert manifest["tokenizer"]["vocab_size"] == len(corpus_tokenizer)
    for spec in SPECS:
        entry = manifest["sources"][spec["name"]]
        documents = list(DocumentSource.from_dict(spec).iter_documents())
        stream = [t for doc in documents for t in corpus_tokenizer(doc, add_special_tokens=False)["input_ids"]
                  + [corpus_tokenizer.eos_token_id]]
        assert entry["complete"] and entry["documents"] == len(documents) and entry["tokens"] == len(stream)
        assert len(entry["shards"]) > 1
        tokens = np.concatenate([np.fromfile(prepared / s["file"], dtype="<u2") for s in entry["shards"]])
        assert tokens.tolist() == stream
        first = entry["shards"][0]
        ends = np.fromfile(prepared / first["index"], dtype="<u8")
        lengths = [len(corpus_tokenizer(d, add_special_tokens=False)["input_ids"]) + 1
                   for d in documents[:first["documents"]]]
        assert ends.tolist() == np.cumsum(lengths).tolist()
    assert verify_prepared(prepared) == {s["name"]: manifest["sources"][s["name"]]["tokens"] for s in SPECS}


@pytest.mark.parametrize("packing", ["document", "causal"])
def test_prepared_rows_equal_on_the_fly_rows(prepared, corpus_tokenizer, packing):
    on_the_fly = global_batches(make_stream(corpus_tokenizer, packing=packing, accumulation=2))
    from_shards = global_batches(make_stream(corpus_tokenizer, prepared, packing=packing, accumulation=2))
    for a, b in zip(on_the_fly, from_shards, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert [tuple(b["input_ids"].shape) for b in from_shards] == [(32, 32)] * 12 + [(8, 128)] * 4


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_any_world_size_sees_the_rows_of_one_process(prepared, corpus_tokenizer, world_size):
    reference = global_batches(make_stream(corpus_tokenizer, prepared, accumulation=8))
    ranks = [list(make_stream(corpus_tokenizer, prepared, world_size, rank, accumulation=8 // world_size))
             for rank in range(world_size)]
    accumulation = 8 // world_size
    for step in range(STEPS):
        # micro-batch m of rank r is global micro-batch m * world_size + r
        ordered = [ranks[rank][step * accumulation + micro]
                   for micro in range(accumulation) for rank in range(world_size)]
        for key in ("input_ids", "labels", "position_ids"):
            assert torch.equal(torch.cat([b[key] for b in ordered]), reference[step][key])


def test_on_the_fly_ranks_agree_with_one_process_too(corpus_tokenizer):
    reference = global_batches(make_stream(corpus_tokenizer, accumulation=2))
    ranks = [list(make_stream(corpus_tokenizer, world_size=2, rank=rank)) for rank in range(2)]
    for step in range(STEPS):
        joined = torch.cat([ranks[0][step]["input_ids"], ranks[1][step]["input_ids"]])
        assert torch.equal(joined, reference[step]["input_ids"])


@pytest.mark.parametrize("use_shards", [True, False])
def test_exact_resume_at_any_step(prepared, corpus_tokenizer, use_shards):
    folder = prepared if use_shards else None
    reference = [b["input_ids"] for b in make_stream(corpus_tokenizer, folder, accumulation=2)]
    for stop in (1, 7, 12, 15):
        stream = make_stream(corpus_tokenizer, folder, accumulation=2)
        iterator = iter(stream)
        for _ in range(2 * stop):
            next(iterator)
        state = json.loads(json.dumps(stream.state_dict()))  # as written to data_state.json
        resumed = make_stream(corpus_tokenizer, folder, accumulation=2)
        resumed.load_state_dict(state)
        rest = [b["input_ids"] for b in resumed]
        assert len(rest) == 2 * (STEPS - stop)
        assert all(torch.equal(a, b) for a, b in zip(rest, reference[2 * stop:], strict=True))
        sought = make_stream(corpus_tokenizer, folder, accumulation=2)
        sought.seek(stop)
        assert all(torch.equal(a["input_ids"], b) for a, b in zip(sought, reference[2 * stop:], strict=True))


def test_state_inside_a_planned_ahead_run_is_that_steps_state(prepared, corpus_tokenizer):
    # the stream plans several steps before building their rows; what it saves after step k must still be step k's
    for stop in (3, 10):
        stream = make_stream(corpus_tokenizer, prepared, accumulation=2)
        iterator = iter(stream)
        for _ in range(2 * stop):
            next(iterator)
        sought = make_stream(corpus_tokenizer, prepared, accumulation=2)
        sought.seek(stop)
        assert stream.state_dict() == sought.state_dict()
        assert stream.step == stop and len(stream) == 2 * (STEPS - stop)


def test_preparation_in_worker_processes_writes_the_same_shards(prepared, corpus_tokenizer, tmp_path):
    prepare_sources(SPECS, corpus_tokenizer, tmp_path, workers=2, shard_chars=10_000, progress=False)
    ours, reference = read_manifest(tmp_path), read_manifest(prepared)
    assert ours["sources"] == reference["sources"]


def test_a_killed_preparation_continues_where_it_stopped(prepared, corpus_tokenizer, tmp_path, monkeypatch):
    write_unit = prepare_module._write_unit

    def killed_at_shard_2(unit):
        if unit.index == 2:
            (tmp_path / unit.source / ".shard-00002.tokens.999.tmp").write_bytes(b"half")  # a half-written file
            raise KeyboardInterrupt
        return write_unit(unit)

    monkeypatch.setattr(prepare_module, "_write_unit", killed_at_shard_2)
    with pytest.raises(KeyboardInterrupt):
        prepare_sources(SPECS, corpus_tokenizer, tmp_path, workers=0, shard_chars=10_000, progress=False)
    manifest = read_manifest(tmp_path)
    assert not manifest["sources"]["general"]["complete"] and not (tmp_path / "general" / "shard-00002.json").exists()
    with pytest.raises(PreparedDataError, match="partly prepared"):
        open_prepared(tmp_path, "general", tokenizer_identity(corpus_tokenizer), False)
    done_before = (tmp_path / "general" / "shard-00000.tokens").stat().st_mtime_ns

    written = []
    monkeypatch.setattr(prepare_module, "_write_unit", lambda unit: written.append((unit.source, unit.index))
                        or write_unit(unit))
    prepare_sources(SPECS, corpus_tokenizer, tmp_path, workers=0, shard_chars=10_000, progress=False)
    assert written[0] == ("general", 2) and ("general", 0) not in written  # only what was missing
    assert (tmp_path / "general" / "shard-00000.tokens").stat().st_mtime_ns == done_before
    assert read_manifest(tmp_path)["sources"] == read_manifest(prepared)["sources"]
    assert not list((tmp_path / "general").glob(".*.tmp"))


def test_another_tokenizer_is_refused_before_training(prepared, corpus_tokenizer, tmp_path):
    other = corpus_tokenizer.__class__(tokenizer_object=corpus_tokenizer.backend_tokenizer, eos_token="</s>")
    other.add_tokens(["<extra>"])
    with pytest.raises(PreparedDataError, match="another tokenizer"):
        open_prepared(prepared, "general", tokenizer_identity(other), False)
    with pytest.raises(PreparedDataError, match="add_bos"):
        open_prepared(prepared, "general", tokenizer_identity(corpus_tokenizer), True)
    with pytest.raises(PreparedDataError, match="prepared from"):
        open_prepared(prepared, "general", tokenizer_identity(corpus_tokenizer), False,
                      {"name": "general", "paths": ["bundled:en_kjv.txt"], "split_by": "line"})
    # preparing into the folder with another tokenizer or spec: refused unless overwrite
    folder = tmp_path / "corpus"
    prepare_sources(SPECS[:1], corpus_tokenizer, folder, workers=0, progress=False)
    with pytest.raises(PreparedDataError, match="--overwrite"):
        prepare_sources(SPECS[:1], other, folder, workers=0, progress=False)
    changed = [{**SPECS[0], "split_by": "file"}]
    with pytest.raises(PreparedDataError, match="--overwrite"):
        prepare_sources(changed, corpus_tokenizer, folder, workers=0, progress=False)
    prepare_sources(changed, corpus_tokenizer, folder, workers=0, progress=False, overwrite=True)
    assert read_manifest(folder)["sources"]["general"]["documents"] == 1
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(PreparedDataError, match="not empty"):
        prepare_sources(SPECS[:1], corpus_tokenizer, stranger, workers=0, progress=False, overwrite=True)


def test_truncated_and_corrupt_shards_are_named(prepared, corpus_tokenizer, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(prepared, folder)
    shard = folder / "general" / "shard-00001.tokens"
    data = bytearray(shard.read_bytes())
    shard.write_bytes(data[:-2])
    stream = make_stream(corpus_tokenizer, folder)
    with pytest.raises(PreparedDataError, match=f"{shard}: truncated"):
        list(stream)
    data[10:12] = (65535).to_bytes(2, "little")  # an id outside the 1,024-entry vocabulary
    shard.write_bytes(data)
    with pytest.raises(ValueError, match=f"{shard}: corrupt shard, token id 65535"):
        list(make_stream(corpus_tokenizer, folder))
    with pytest.raises(PreparedDataError, match=f"{shard}: corrupt shard"):
        verify_prepared(folder)


def test_cli_prepares_a_recipe_and_training_reads_it(corpus_tokenizer, tmp_path, capsys):
    tokenizer_dir = tmp_path / "tokenizer"
    corpus_tokenizer.save_pretrained(tokenizer_dir)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model": {"family": "tinyllama", "preset": "tiny"}, "tokenizer": str(tokenizer_dir),
        "data": {"sources": SPECS, "mixture": PHASES, "sequence_length": LENGTHS, "tokens_per_step": TOKENS_PER_STEP,
                 "prepared": str(tmp_path / "tokens")},
        "training": {"max_steps": STEPS, "gradient_accumulation_steps": 2}}))
    assert cli_main(["data", "prepare", "--recipe", str(recipe), "--workers", "0", "--no-progress"]) == 0
    assert "general" in capsys.readouterr().out
    assert cli_main(["data", "verify", str(tmp_path / "tokens")]) == 0
    from hf_smallllm.train.build import build_stream
    from hf_smallllm.train.recipe import load_recipe

    loaded = load_recipe(str(recipe))
    stream = build_stream(loaded, corpus_tokenizer)
    assert all(type(s).__name__ == "PreparedTokens" for s in stream.sources.values())
    reference = global_batches(make_stream(corpus_tokenizer, accumulation=2))
    assert all(torch.equal(a["input_ids"], b["input_ids"])
               for a, b in zip(global_batches(stream), reference, strict=True))
    # the same folder, another tokenizer: one line, exit status 2
    other = corpus_tokenizer.__class__(tokenizer_object=corpus_tokenizer.backend_tokenizer, eos_token="</s>")
    other.add_tokens(["<extra>"])
    other.save_pretrained(tmp_path / "other")
    assert cli_main(["data", "prepare", "--recipe", str(recipe), "--tokenizer", str(tmp_path / "other"),
                     "--workers", "0", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_streaming_datasets_source_prepares_like_its_file(corpus_tokenizer, tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"text": f"Document number {i}. " * (i % 7 + 1)}) + "\n" for i in range(300)))
    specs = [{"name": "streamed", "dataset": "json", "streaming": True,
              "dataset_kwargs": {"data_files": str(records), "split": "train"}},
             {"name": "file", "paths": [str(records)]}]
    manifest = prepare_sources(specs, corpus_tokenizer, tmp_path / "tokens", workers=0, shard_chars=2_000,
                               progress=False)
    streamed, file = manifest["sources"]["streamed"], manifest["sources"]["file"]
    assert streamed["documents"] == file["documents"] == 300 and streamed["tokens"] == file["tokens"]
    assert [s["sha256"] for s in streamed["shards"]] == [s["sha256"] for s in file["shards"]]
