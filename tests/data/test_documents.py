"""Document sources: how files and datasets split into documents, in a fixed order, with clear errors."""

import json

import pytest

from hf_smallllm.data import DocumentSource


def test_bundled_text_files_split_by_rule():
    plays = list(DocumentSource("plays", "bundled:en_shakespeare.txt", split_by="heading").iter_documents())
    assert len(plays) == 11 and plays[0].startswith("# A Midsummer Night's Dream")
    verses = DocumentSource("kjv", "bundled:en_kjv.txt", split_by="line")
    first = next(verses.iter_documents())
    assert first.startswith("Ge1:1 In the beginning")
    assert list(verses.iter_documents(start=2))[0].startswith("Ge1:3")
    paragraphs = list(DocumentSource("doc", "bundled:en_pydoc.txt", split_by="blank_line").iter_documents())
    assert len(paragraphs) > 1000 and all(p.strip() for p in paragraphs)


def test_jsonl_parquet_and_datasets_sources(tmp_path):
    records = [{"text": f"document {i}", "id": i} for i in range(5)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert list(DocumentSource("j", str(tmp_path / "*.jsonl")).iter_documents()) == [r["text"] for r in records]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": [r["text"] for r in records]}), tmp_path / "b.parquet", row_group_size=2)
    parquet = DocumentSource("p", str(tmp_path / "b.parquet"), text_field="body")
    assert list(parquet.iter_documents(start=3)) == ["document 3", "document 4"]

    import datasets

    dataset = datasets.Dataset.from_list(records)
    assert list(DocumentSource("d", dataset=dataset).iter_documents()) == [r["text"] for r in records]
    streamed = datasets.load_dataset("json", data_files=str(tmp_path / "a.jsonl"), split="train", streaming=True)
    assert list(DocumentSource("s", dataset=streamed).iter_documents(start=4)) == ["document 4"]


def test_source_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        DocumentSource("x", str(tmp_path / "missing-*.txt"))
    with pytest.raises(FileNotFoundError, match="no bundled corpus file 'nope.txt'"):
        DocumentSource("x", "bundled:nope.txt")
    with pytest.raises(ValueError, match="exactly one of 'paths' or 'dataset'"):
        DocumentSource("x")
    with pytest.raises(ValueError, match="split_by='sentence'"):
        DocumentSource("x", "bundled:en_kjv.txt", split_by="sentence")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        list(DocumentSource("b", str(bad)).iter_documents())
    wrong_field = tmp_path / "wrong.jsonl"
    wrong_field.write_text('{"content": "x"}\n')
    with pytest.raises(ValueError, match="no field 'text'"):
        list(DocumentSource("w", str(wrong_field)).iter_documents())
    with pytest.raises(ValueError, match="unknown fields"):
        DocumentSource.from_dict({"name": "x", "paths": ["bundled:en_kjv.txt"], "colour": "red"})
