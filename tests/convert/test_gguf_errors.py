"""A GGUF file or GGUF export option that is not what it should be is one line naming the file or option, exit
status 2, no traceback: `convert to-gguf` outputs that cannot be written and out-of-range --tolerance / --json;
`tokenizer inspect` and `generate --backend llama.cpp` on files that are empty, truncated, not GGUF, of another
version, with corrupt counts or inconsistent with themselves (`hf_smallllm.convert.gguf_file`, checked before any
reader that trusts the file)."""

import os
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")  # the export writes with the gguf package

from hf_smallllm.convert.gguf import package_to_gguf  # noqa: E402
from hf_smallllm.convert.gguf_file import InvalidGGUFError, check_gguf_file_complete  # noqa: E402
from hf_smallllm.families import FAMILIES, preset_config  # noqa: E402
from hf_smallllm.inference.llama_cpp import llama_cpp_available  # noqa: E402
from hf_smallllm_cli import main  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tokenizers"
HUGE = 2**62
_PROGRESS = re.compile(r"\d+%\||\bit/s\]|s/it\]")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_tokenizer):
    """(checkpoint folder, its f32 GGUF export): a tiny TinyLlama-shaped model with the ~1,000-entry corpus
    tokenizer, so the GGUF is small (about 300 kB) and the export takes a fraction of a second."""
    root = tmp_path_factory.mktemp("gguf-errors")
    folder = root / "checkpoint"
    config = preset_config("tinyllama", "tiny", vocab_size=len(corpus_tokenizer), bos_token_id=1, eos_token_id=2)
    FAMILIES["tinyllama"].causal_lm_class(config).save_pretrained(folder)
    corpus_tokenizer.save_pretrained(folder)
    package_to_gguf(folder, root / "tiny.gguf", verify=False, progress=False)
    return folder, root / "tiny.gguf"


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt):]


def _counts(data: bytes) -> tuple[int, int]:
    return struct.unpack_from("<QQ", data, 8)  # tensors, metadata entries


# name -> (bytes of the damaged file from those of a good one, what the message says)
DAMAGED = {
    "empty": (lambda d: b"", "is not a GGUF file: it is empty"),
    "first-10-bytes": (lambda d: d[:10], "is not a complete GGUF file: it ends at byte 10, inside the 24-byte header"),
    "first-100-bytes": (lambda d: d[:100], "is not a complete GGUF file: the header claims"),
    "first-half": (lambda d: d[:len(d) // 2], "is not a complete GGUF file: it ends at byte"),
    "last-byte-missing": (lambda d: d[:-1], "is not a complete GGUF file: it ends at byte"),
    "wrong-magic": (lambda d: b"GGML" + d[4:], "is not a valid GGUF file: it starts with b'GGML'"),
    "wrong-version": (lambda d: _patched(d, 4, "<I", 7), "is not a valid GGUF file: GGUF version 7"),
    "big-endian": (lambda d: _patched(d, 4, ">I", 3), "big-endian GGUF"),
    "huge-tensor-count": (lambda d: _patched(d, 8, "<Q", HUGE),
                          f"the header claims {HUGE:,} tensor records but only"),
    "huge-kv-count": (lambda d: _patched(d, 16, "<Q", HUGE), f"the header claims {HUGE:,} metadata entries but only"),
    "kv-count-plus-one": (lambda d: _patched(d, 16, "<Q", _counts(d)[1] + 1), "is not a complete GGUF file"),
    "tensor-count-plus-one": (lambda d: _patched(d, 8, "<Q", _counts(d)[0] + 1), "is not a complete GGUF file"),
    # seeded: the message shows the first bytes, and a quote among them would change how Python prints them
    "random-bytes": (lambda d: b"\x00" + random.Random(0).randbytes(4095),
                     "is not a valid GGUF file: it starts with b'\\x00"),
}


def _damaged(tiny, tmp_path, case: str) -> Path:
    make, _ = DAMAGED[case]
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(make(tiny[1].read_bytes()))
    return path


def _one_error_line(err: str, command: str) -> str:
    """The error line of a failed command: exactly one `hf-smallllm COMMAND: error:` line, no traceback, and no other
    line that speaks of an error (progress bars and library notices aside)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not _PROGRESS.search(line)]
    errors = [line for line in lines if line.startswith(f"hf-smallllm {command}: error: ")]
    assert len(errors) == 1, err
    assert not [line for line in lines if line not in errors and "error" in line.lower()], err
    return errors[0]


def _fails(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    for text in expected:
        assert text in line, line
    return line


# --------------------------------------------------------------------------------------------------- the check
def test_good_files_pass_the_check(tiny):
    info = check_gguf_file_complete(tiny[1])
    assert info.architecture == "llama" and info.version == 3 and len(info.tensors) > 0
    assert info.array_lengths["tokenizer.ggml.tokens"] == info.array_lengths["tokenizer.ggml.token_type"] > 0
    for vocabulary in FIXTURES.glob("*.gguf"):  # llama.cpp's own vocabulary-only files
        assert check_gguf_file_complete(vocabulary).tensors == ()


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_files_fail_the_check(tiny, tmp_path, case):
    path = _damaged(tiny, tmp_path, case)
    with pytest.raises(InvalidGGUFError, match=re.escape(DAMAGED[case][1])) as error:
        check_gguf_file_complete(path)
    assert isinstance(error.value, ValueError) and str(path) in str(error.value)


@pytest.mark.parametrize("case", ["empty", "first-10-bytes", "first-100-bytes", "wrong-magic", "wrong-version",
                                  "huge-tensor-count", "huge-kv-count", "kv-count-plus-one", "random-bytes"])
def test_library_tokenizer_loader_on_damaged_files(tiny, tmp_path, case):
    """`load_gguf_tokenizer` (below the convert package, so without the check) still says it in one line."""
    from hf_smallllm.errors import UsageValueError
    from hf_smallllm.tokenization import load_gguf_tokenizer

    path = _damaged(tiny, tmp_path, case)
    with pytest.raises(UsageValueError, match=f"{re.escape(str(path))} is not a valid or complete GGUF file"):
        load_gguf_tokenizer(path)


# ------------------------------------------------------------------------------------------ convert to-gguf
def test_export_outputs_that_cannot_be_written(tiny, tmp_path, capsys):
    folder = str(tiny[0])
    (tmp_path / "a-file").write_text("x")
    for output in (tmp_path / "a-file" / "out.gguf", tmp_path / "a-file" / "sub" / "out.gguf"):
        _fails(capsys, ["convert", "to-gguf", folder, str(output), "--no-progress"], f"output {output}",
               f"{tmp_path / 'a-file'} is a file, not a folder")
    if Path("/proc").is_dir():  # a folder no one, root included, can create files in
        _fails(capsys, ["convert", "to-gguf", folder, "/proc/hf-smallllm-test.gguf", "--no-progress"],
               "output /proc/hf-smallllm-test.gguf: cannot create a file in /proc")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder(tiny, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _fails(capsys, ["convert", "to-gguf", str(tiny[0]), str(locked / "out.gguf"), "--no-progress"],
               f"output {locked / 'out.gguf'}: cannot create a file in {locked}")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(("options", "expected"), [
    (["--tolerance", "-1"], "--tolerance -1.0: the largest |logit difference| allowed must be a finite number >= 0"),
    (["--tolerance", "nan"], "--tolerance nan: the largest |logit difference| allowed must be a finite number >= 0"),
    (["--json", "{folder}"], "--json {folder} is a folder; give a file path"),
    (["--json", "{file}/report.json"], "--json {file}/report.json: {file} is a file, not a folder"),
])
def test_export_options(tiny, tmp_path, capsys, options, expected):
    names = {"folder": str(tmp_path), "file": str(tmp_path / "a-file")}
    (tmp_path / "a-file").write_text("x")
    output = tmp_path / "out.gguf"
    _fails(capsys, ["convert", "to-gguf", str(tiny[0]), str(output), "--no-progress",
                    *[option.format(**names) for option in options]], expected.format(**names))
    assert not output.exists()  # refused before any work


def test_library_refuses_a_bad_tolerance(tiny, tmp_path):
    for tolerance in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"tolerance=.*finite number >= 0 \(verify=False skips the check\)"):
            package_to_gguf(tiny[0], tmp_path / "out.gguf", tolerance=tolerance, progress=False)


# ------------------------------------------------------------------------------------------ tokenizer inspect
@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_tokenizer_inspect_on_damaged_files(tiny, tmp_path, capsys, case):
    path = _damaged(tiny, tmp_path, case)
    _fails(capsys, ["tokenizer", "inspect", str(tmp_path), "--gguf-file", path.name], f"--gguf-file {path} ",
           DAMAGED[case][1])


def test_tokenizer_inspect_names_the_file(tiny, tmp_path, capsys):
    path = _damaged(tiny, tmp_path, "first-100-bytes")
    _fails(capsys, ["tokenizer", "inspect", str(path)], f"{path} is not a complete GGUF file")  # PATH = the file
    _fails(capsys, ["tokenizer", "inspect", str(tmp_path), "--gguf-file", "missing.gguf"],
           "--gguf-file missing.gguf: no such file")
    _fails(capsys, ["tokenizer", "inspect", str(tmp_path), "--gguf-file", str(tmp_path)],
           f"--gguf-file {tmp_path} is a folder, not a GGUF file")
    assert main(["tokenizer", "inspect", str(tiny[1])]) == 0  # the good file, given the same way
    assert "tokens, model_max_length" in capsys.readouterr().out


# --------------------------------------------------------------------------------- generate --backend llama.cpp
needs_llama_cpp = pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python is not installed")


@pytest.mark.llama_cpp
@needs_llama_cpp
@pytest.mark.parametrize("case", ["random-bytes", "empty", "first-100-bytes", "first-half", "last-byte-missing",
                                  "kv-count-plus-one", "tensor-count-plus-one", "huge-kv-count"])
def test_generate_llama_cpp_on_damaged_files(tiny, tmp_path, capsys, case):
    path = _damaged(tiny, tmp_path, case)
    _fails(capsys, ["generate", str(path), "--prompt", "hi", "--backend", "llama.cpp", "--max-new-tokens", "2"],
           f"{path} ", DAMAGED[case][1])
    assert capsys.readouterr().out == ""  # the prompt is echoed only once the model is loaded


@pytest.mark.llama_cpp
@needs_llama_cpp
def test_generate_llama_cpp_on_files_llama_cpp_refuses(tmp_path, capsys):
    import numpy as np
    from gguf import GGUFWriter

    vocabulary = FIXTURES / "ggml-vocab-llama-spm.gguf"
    _fails(capsys, ["generate", str(vocabulary), "--prompt", "hi", "--backend", "llama.cpp"],
           f"{vocabulary} holds no tensors")
    path = tmp_path / "unknown-architecture.gguf"  # a sound file of an architecture llama.cpp does not know
    writer = GGUFWriter(path, "no-such-architecture")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _fails(capsys, ["generate", str(path), "--prompt", "hi", "--backend", "llama.cpp"],
           f"{path}: llama.cpp cannot load this GGUF file (architecture 'no-such-architecture', 1 tensor")


@pytest.mark.llama_cpp
@needs_llama_cpp
def test_generate_llama_cpp_process_exits_cleanly(tmp_path):
    """The whole command in its own process: status 2 and the one line, not an abort inside llama.cpp."""
    path = tmp_path / "random.gguf"
    path.write_bytes(b"\x00" + random.Random(0).randbytes(999))
    done = subprocess.run([sys.executable, "-m", "hf_smallllm_cli", "generate", str(path), "--prompt", "hi",
                           "--backend", "llama.cpp"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("hf-smallllm generate: error: ")]
    assert "Traceback" not in done.stderr and len(lines) == 1 and f"{path} is not a valid GGUF file" in lines[0]
