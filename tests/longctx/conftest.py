import pytest


@pytest.fixture(scope="session")
def tokenizer_dir(corpus_tokenizer, tmp_path_factory):
    """The shared corpus tokenizer saved as a folder, as recipes name tokenizers."""
    folder = tmp_path_factory.mktemp("longctx_tokenizer")
    corpus_tokenizer.save_pretrained(folder)
    return folder
