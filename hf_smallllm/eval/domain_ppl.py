"""Domain perplexity as Skywork-13B computes it, so models with different tokenizers compare fairly.

Method (Skywork tech report section 4.3, README "Documentation Perplexity Evaluation", GH:SkyworkAI/Skywork
`eval/eval_loss.py`):
- every document is cut to the same number of characters (Skywork: `max_position_embeddings // 3`, i.e. 1365 for
  a 4096 context), so all models see identical text; tokens are encoded without special tokens (no BOS);
- a model's per-domain loss is the summed cross-entropy of every token but each document's first, divided by the
  number of those tokens;
- cross-tokenizer normalisation: `loss_norm = loss x own_tokens / reference_tokens`, i.e. the model's total nats
  on the domain divided by the token count of a reference tokenizer (Skywork's own). The total nats, -log P(text),
  do not depend on how the text is cut into tokens, so normalised losses of different tokenizers share one unit;
- the reported perplexity is `exp(loss_norm)`; "Average" is exp of the normalised loss over all documents of all
  domains taken as one collection (total nats / total reference tokens), not the mean of per-domain perplexities.

Models are scored one at a time (`score_model`), so a comparison of large checkpoints holds one model in memory.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageValueError
from ..runfiles import write_json_atomic
from .documents import Domain, read_documents, resolve_domains
from .losses import DocumentLoss, document_losses, encode_documents


@dataclass
class DomainScore:
    """One model on one domain."""

    documents: int
    nll: float  # total nats over the predicted tokens
    tokens: int  # the model's own predicted tokens (every token but each document's first)
    reference_tokens: int  # the reference tokenizer's predicted tokens on the same text
    loss: float  # nll / tokens: the model's own per-token loss
    normalized_loss: float  # nll / reference_tokens (= loss x tokens / reference_tokens)
    ppl: float  # exp(normalized_loss)

    @classmethod
    def from_losses(cls, losses: Sequence[DocumentLoss], reference_tokens: int) -> "DomainScore":
        nll = sum(d.nll for d in losses)
        tokens = sum(d.predicted_tokens for d in losses)
        if tokens == 0 or reference_tokens == 0:
            raise ValueError("a domain needs documents of two or more tokens to be scored")
        normalized = nll / reference_tokens
        return cls(len(losses), nll, tokens, reference_tokens, nll / tokens, normalized, math.exp(normalized))


@dataclass
class ModelDomainPerplexity:
    """One model on every domain, plus the average over all documents."""

    model: str
    domains: dict[str, DomainScore]
    average_loss: float  # total nats / total reference tokens over every domain
    average_ppl: float

    @classmethod
    def from_scores(cls, model: str, domains: dict[str, DomainScore]) -> "ModelDomainPerplexity":
        average = sum(s.nll for s in domains.values()) / sum(s.reference_tokens for s in domains.values())
        return cls(model, domains, average, math.exp(average))


@dataclass
class DomainPerplexityReport:
    """A comparison of models on the same truncated documents, normalised to one reference tokenizer."""

    reference: str  # the tokenizer whose token counts normalise every model
    max_chars: int
    domains: dict[str, dict]  # name -> {"path", "documents", "reference_tokens"}
    models: list[ModelDomainPerplexity] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "method": "skywork-domain-perplexity",
            "reference": self.reference,
            "max_chars": self.max_chars,
            "domains": self.domains,
            "models": {m.model: {"average_loss": m.average_loss, "average_ppl": m.average_ppl,
                                 "domains": {d: asdict(s) for d, s in m.domains.items()}} for m in self.models},
        }

    def to_markdown(self, digits: int = 2) -> str:
        """Models as rows, domains plus Average as columns, normalised perplexity in each cell."""
        names = list(self.domains)
        lines = ["| model | " + " | ".join(names) + " | Average |", "|---" * (len(names) + 2) + "|"]
        for m in self.models:
            cells = [f"{m.domains[d].ppl:.{digits}f}" for d in names] + [f"**{m.average_ppl:.{digits}f}**"]
            lines.append(f"| {m.model} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())


def load_domain_documents(
    domains=None,
    *,
    max_chars: int,
    max_documents: int | None = None,
    text_field: str = "text",
) -> dict[str, list[str]]:
    """{domain name: documents cut to `max_chars` characters} for `name=path` specs, a mapping, or None (the bundled
    validation domains). Plain-text files are cut into documents of `max_chars` characters at line ends."""
    resolved: list[Domain] = resolve_domains(domains)
    return {
        d.name: read_documents(d.path, text_field=text_field, chunk_chars=max_chars, max_documents=max_documents,
                               max_chars=max_chars)
        for d in resolved
    }


def reference_token_counts(tokenizer, documents: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Predicted-token count (tokens minus one per document, no special tokens) of each domain under `tokenizer`."""
    counts = {}
    for name, texts in documents.items():
        counts[name] = sum(max(len(ids) - 1, 0) for ids in encode_documents(tokenizer, texts))
    return counts


def score_model(
    name: str,
    model,
    tokenizer,
    documents: Mapping[str, Sequence[str]],
    reference_counts: Mapping[str, int],
    *,
    batch_size: int = 4,
    progress: bool = False,
) -> ModelDomainPerplexity:
    """Domain perplexity of one model; a document longer than the model's context is an error (cut the text
    shorter rather than compare models on different text)."""
    scores = {}
    for domain, texts in documents.items():
        losses = document_losses(model, tokenizer, texts, batch_size=batch_size, overflow="error",
                                 progress=progress, desc=f"{name} {domain}")
        scores[domain] = DomainScore.from_losses(losses, reference_counts[domain])
    return ModelDomainPerplexity.from_scores(name, scores)


def compare_models(
    models: Sequence[tuple[str, str]],
    domains=None,
    *,
    reference: str | None = None,
    max_chars: int | None = None,
    max_documents: int | None = None,
    text_field: str = "text",
    batch_size: int = 4,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = False,
) -> DomainPerplexityReport:
    """Domain perplexity of saved models (`[(name, folder or Hub id)]`) on the same documents, normalised to the
    token counts of one `reference` tokenizer (default: the first model's). `domains` as in `load_domain_documents`;
    `max_chars` defaults to `default_max_chars` of the models' configs. Models are loaded one at a time."""
    import gc

    from ..inference.loading import load_config, load_model_and_tokenizer, load_tokenizer

    names = [name for name, _ in models]
    if not models or len(set(names)) != len(names):
        raise UsageValueError(f"model names must be unique, got {names}")
    max_chars = max_chars or default_max_chars(*(load_config(path) for _, path in models))
    resolved = resolve_domains(domains)
    documents = load_domain_documents(resolved, max_chars=max_chars, max_documents=max_documents,
                                      text_field=text_field)
    reference = reference or models[0][1]
    reference_counts = reference_token_counts(load_tokenizer(reference), documents)
    report = DomainPerplexityReport(
        reference=reference, max_chars=max_chars,
        domains={d.name: {"path": str(d.path), "documents": len(documents[d.name]),
                          "reference_tokens": reference_counts[d.name]} for d in resolved},
    )
    for name, path in models:
        model, tokenizer = load_model_and_tokenizer(path, device=device, dtype=dtype)
        report.models.append(score_model(name, model, tokenizer, documents, reference_counts,
                                         batch_size=batch_size, progress=progress))
        del model
        gc.collect()
    return report


def default_max_chars(*configs) -> int:
    """Skywork's truncation length for a set of models: the smallest `max_position_embeddings // 3`, so that even
    a tokenizer that needs three tokens per character (byte-level Chinese) fits every model's context."""
    lengths = [c.max_position_embeddings for c in configs if getattr(c, "max_position_embeddings", None)]
    if not lengths:
        raise ValueError("no model config has max_position_embeddings; give max_chars explicitly")
    return max(min(lengths) // 3, 1)


__all__ = [
    "DomainPerplexityReport",
    "DomainScore",
    "ModelDomainPerplexity",
    "compare_models",
    "default_max_chars",
    "load_domain_documents",
    "reference_token_counts",
    "score_model",
]
