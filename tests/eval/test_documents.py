"""Reading domain files into evaluation documents."""

import gzip
import json

import pytest

from hf_smallllm.eval.documents import (
    chunk_text,
    default_domains,
    evenly_spaced,
    parse_domain,
    read_documents,
    resolve_domains,
)


def test_default_domains_are_the_five_bundled_validation_files():
    domains = default_domains()
    assert [d.name for d in domains] == ["code_python", "en_kjv", "en_pydoc", "en_shakespeare", "zh_poetry"]
    assert all(d.path.is_file() and d.path.parent.name == "validation" for d in domains)


def test_chunk_text_cuts_at_line_ends_and_keeps_every_character():
    text = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(200))
    chunks = chunk_text(text, 100)
    assert "".join(chunks) == text
    assert all(len(c) <= 100 for c in chunks)
    assert all(c.endswith("\n") for c in chunks)


def test_chunk_text_cuts_inside_a_line_longer_than_the_chunk():
    chunks = chunk_text("a" * 250 + "\nb\n", 100)
    assert chunks == ["a" * 100, "a" * 100, "a" * 50 + "\n" + "b\n"]


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced(list(range(3)), None) == [0, 1, 2]
    assert evenly_spaced(list(range(3)), 5) == [0, 1, 2]


def test_read_documents_jsonl_plain_and_gzip(tmp_path):
    records = [{"text": f"document {i}", "other": i} for i in range(6)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    assert read_documents(jsonl) == [r["text"] for r in records]
    assert read_documents(jsonl, max_documents=3, max_chars=5) == ["docum"] * 3
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(jsonl.read_text(encoding="utf-8"))
    assert read_documents(gz) == read_documents(jsonl)
    text = tmp_path / "t.txt"
    text.write_text("verse one\nverse two\nverse three\n", encoding="utf-8")
    assert read_documents(text, chunk_chars=20) == ["verse one\nverse two\n", "verse three\n"]


def test_bundled_kjv_becomes_passages_of_whole_verses():
    path = default_domains()[1].path
    documents = read_documents(path, chunk_chars=1000, max_documents=10)
    assert len(documents) == 10
    assert all(d.endswith("\n") and len(d) <= 1000 for d in documents)


def test_bad_domain_specs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="code"):
        parse_domain(f"code={tmp_path / 'missing.jsonl'}")
    path = tmp_path / "a.txt"
    path.write_text("x\n")
    assert parse_domain(str(path)).name == "a"
    with pytest.raises(ValueError, match="unique"):
        resolve_domains([f"a={path}", f"a={path}"])
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"content": "x"}\n')
    with pytest.raises(ValueError, match="no 'text' field"):
        read_documents(bad)
    assert read_documents(bad, text_field="content") == ["x"]
