"""Document filters by metadata field: SlimPajama without its GitHub subset (TinyLlama's preprocessing), in JSONL,
Parquet and datasets records; the same documents on the fly and in `data prepare`; the filters recorded in the
manifest, and a recipe asking for other filters refused in one line."""

import json

import numpy as np
import pytest

from hf_smallllm.data import DocumentSource, OnTheFlyTokens, PreparedDataError, open_prepared, tokenizer_identity
from hf_smallllm.data.prepare import prepare_sources
from hf_smallllm.train.recipe import RecipeError, load_recipe

NO_GITHUB = [{"field": "meta.redpajama_set_name", "exclude": ["RedPajamaGithub"]}]


@pytest.fixture
def sample(fixtures_dir):
    return fixtures_dir / "slimpajama_sample.jsonl"


def set_names(path):
    return [json.loads(line)["meta"]["redpajama_set_name"] for line in path.read_text().splitlines()]


def texts(path, keep):
    return [json.loads(line)["text"] for line in path.read_text().splitlines()
            if keep(json.loads(line)["meta"]["redpajama_set_name"])]


def test_exclude_drops_the_github_subset_and_counts_it(sample):
    source = DocumentSource("slimpajama", [str(sample)], filters=NO_GITHUB)
    documents = list(source.iter_documents())
    assert documents == texts(sample, lambda name: name != "RedPajamaGithub")
    assert source.filtered_out == set_names(sample).count("RedPajamaGithub") == 3
    # resuming at document N counts documents after filtering, as the stream's cursor does
    assert list(source.iter_documents(start=2)) == documents[2:]


def test_include_keeps_only_the_listed_values_and_every_filter_must_pass(sample):
    wiki_or_c4 = {"field": "meta.redpajama_set_name", "include": ["RedPajamaWikipedia", "RedPajamaC4"]}
    source = DocumentSource("some", [str(sample)], filters=[wiki_or_c4])
    assert list(source.iter_documents()) == texts(sample, lambda n: n in ("RedPajamaWikipedia", "RedPajamaC4"))
    both = DocumentSource("some", [str(sample)], filters=[wiki_or_c4, {"field": "meta.redpajama_set_name",
                                                                       "exclude": "RedPajamaC4"}])
    assert list(both.iter_documents()) == texts(sample, lambda n: n == "RedPajamaWikipedia")


def test_parquet_and_dataset_records_filter_alike(sample, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in sample.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "sample.parquet", row_group_size=5)
    expected = texts(sample, lambda name: name != "RedPajamaGithub")
    parquet = DocumentSource("pq", [str(tmp_path / "sample.parquet")], filters=NO_GITHUB)
    assert list(parquet.iter_documents()) == expected
    dataset = DocumentSource("ds", dataset=datasets.Dataset.from_list(records), filters=NO_GITHUB)
    assert list(dataset.iter_documents()) == expected


@pytest.mark.parametrize("filters,message", [
    ([{"field": "meta.set", "exclude": ["x"]}], r"slimpajama_sample.jsonl:1: no field 'meta.set' to filter on"),
    ([{"field": "meta.redpajama_set_name"}], "give exactly one of 'include' or 'exclude'"),
    ([{"field": "meta..name", "include": ["x"]}], r"filters\[0\].field: a dotted path"),
    ([{"field": "meta.redpajama_set_name", "exclude": []}], "a non-empty list of plain values"),
    ([{"field": "a", "drop": ["x"]}], "a filter is {field: a.b, include"),
])
def test_bad_filters_are_named_in_one_line(sample, filters, message):
    with pytest.raises(ValueError, match=message) as error:
        list(DocumentSource("slimpajama", [str(sample)], filters=filters).iter_documents())
    assert "\n" not in str(error.value)


def test_plain_text_files_cannot_be_filtered():
    with pytest.raises(ValueError, match="filters need records with fields"):
        DocumentSource("kjv", ["bundled:en_kjv.txt"], split_by="line", filters=NO_GITHUB)


def test_prepare_records_the_filters_and_matches_the_on_the_fly_tokens(sample, corpus_tokenizer, tmp_path):
    spec = {"name": "slimpajama", "paths": [str(sample)], "filters": NO_GITHUB}
    manifest = prepare_sources([spec], corpus_tokenizer, tmp_path / "tokens", workers=0, progress=False)
    entry = manifest["sources"]["slimpajama"]
    assert entry["filters"] == NO_GITHUB and entry["filtered_out"] == 3 and entry["documents"] == 9
    assert json.loads((tmp_path / "tokens" / "manifest.json").read_text())["sources"]["slimpajama"]["filtered_out"] == 3

    identity = tokenizer_identity(corpus_tokenizer)
    prepared = open_prepared(tmp_path / "tokens", "slimpajama", identity, False, spec)
    on_the_fly = OnTheFlyTokens(DocumentSource.from_dict(spec), corpus_tokenizer)
    a, b = np.empty(300, np.int64), np.empty(300, np.int64)
    prepared.read_into(a, 0)
    on_the_fly.read_into(b, 0)
    assert np.array_equal(a, b)

    # the recipe's filters must be the manifest's: with the source's files named, and by name alone
    for other in ({**spec, "filters": []}, {"name": "slimpajama", "filters": [{**NO_GITHUB[0], "exclude": ["X"]}]}):
        with pytest.raises(PreparedDataError, match=r"prepared with filters \[\{'field': 'meta.redpajama_set_name'"):
            open_prepared(tmp_path / "tokens", "slimpajama", identity, False, other)


def test_a_recipe_checks_its_filters_at_load_time(sample):
    recipe = {"model": {"family": "tinyllama", "preset": "tiny"}, "tokenizer": None,
              "data": {"sources": [{"name": "slimpajama", "paths": [str(sample)],
                                    "filters": [{"field": "meta.redpajama_set_name", "remove": ["x"]}]}],
                       "seq_len": 64, "tokens_per_step": 256}}
    with pytest.raises(RecipeError, match=r"data.sources\[0\].filters\[0\]: a filter is"):
        load_recipe(recipe)


def test_data_prepare_reports_what_the_filters_dropped(sample, corpus_tokenizer, tmp_path, capsys):
    from hf_smallllm_cli import main

    corpus_tokenizer.save_pretrained(tmp_path / "tokenizer")
    recipe = {"model": {"family": "tinyllama", "preset": "tiny"}, "tokenizer": str(tmp_path / "tokenizer"),
              "data": {"sources": [{"name": "slimpajama", "paths": [str(sample)], "filters": NO_GITHUB}],
                       "seq_len": 64, "tokens_per_step": 256}}
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
    assert main(["data", "prepare", "--recipe", str(tmp_path / "recipe.yaml"), "--output", str(tmp_path / "tokens"),
                 "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "(3 records dropped by its filters)" in printed and " 9 documents" in printed
    assert main(["data", "info", str(tmp_path / "tokens")]) == 0
    assert "(3 records dropped by its filters)" in capsys.readouterr().out
