"""Bedrock embeddings behind the OpenAI embeddings API, through InvokeModel
(`POST /model/<id>/invoke`), whose body is the model's own: Amazon Titan Text Embeddings
(`amazon.titan-embed-text-v2:0`, v1) take one text per call, Cohere Embed (`cohere.embed-*`)
up to 96. A request becomes as many InvokeModel bodies as that takes, one per line of the
upstream payload (sent and signed one by one: `tollway.providers.fanout`), and their answers,
read back as one JSON array in order, become one OpenAI embeddings list.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from tollway.providers import TranslationError, float32_base64
from tollway.providers.fanout import MAX_PARTS

__all__ = ["from_invoke", "to_invoke"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

_COHERE_BATCH: Final = 96


def _family(model_id: str) -> str | None:
    if "titan-embed" in model_id:
        return "titan"
    if "cohere.embed" in model_id:
        return "cohere"
    return None


def _texts(body: dict[str, Any]) -> list[str]:
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise TranslationError(
            "Bedrock embeddings take input as a string or a non-empty list of strings"
        )
    return inputs


def to_invoke(body: dict[str, Any], model_id: str) -> bytes:
    """The InvokeModel bodies for an OpenAI embeddings request, one per line."""
    family = _family(model_id)
    if family is None:
        raise TranslationError(
            f"Bedrock embeddings need a Titan Text Embeddings or Cohere Embed model, "
            f"not {model_id!r}"
        )
    texts = _texts(body)
    dimensions = body.get("dimensions")
    if family == "titan":
        if len(texts) > MAX_PARTS:
            raise TranslationError(f"Titan embeddings take at most {MAX_PARTS} inputs at once")
        extra = {"dimensions": dimensions} if dimensions else {}
        return b"\n".join(_encode({"inputText": t, **extra}) for t in texts)
    cohere: dict[str, Any] = {
        # OpenAI has no input type: documents, unless the client names one (extra_body).
        "input_type": body.get("input_type") or "search_document",
        "embedding_types": ["float"],
    }
    if dimensions:
        cohere["output_dimension"] = dimensions  # Cohere Embed v4
    if body.get("truncate"):
        cohere["truncate"] = body["truncate"]
    batches = [texts[i : i + _COHERE_BATCH] for i in range(0, len(texts), _COHERE_BATCH)]
    if len(batches) > MAX_PARTS:
        raise TranslationError("too many inputs for one embeddings request")
    return b"\n".join(_encode({**cohere, "texts": batch}) for batch in batches)


def _vectors(answer: Any) -> tuple[list[list[float]], int | None]:
    """The vectors of one InvokeModel answer and its token count (Titan's), in order."""
    if not isinstance(answer, dict):
        raise ValueError("an InvokeModel answer must be a JSON object")
    if "embedding" in answer:  # Titan
        return [answer["embedding"]], int(answer.get("inputTextTokenCount") or 0)
    vectors = answer.get("embeddings")
    if isinstance(vectors, dict):  # Cohere with embedding_types
        vectors = vectors.get("float")
    if not isinstance(vectors, list):
        raise ValueError("a Cohere answer without float embeddings")
    return vectors, None


def from_invoke(body: bytes, model: str, request: dict[str, Any] | None) -> bytes:
    """One OpenAI embeddings list for the JSON array of InvokeModel answers, as floats or
    base64 as the request asked. Titan counts its tokens; Cohere's are estimated."""
    answers = _decode(body)
    if not isinstance(answers, list):
        answers = [answers]
    values: list[list[float]] = []
    tokens = 0
    counted = True
    for answer in answers:
        vectors, n = _vectors(answer)
        values.extend(vectors)
        counted = counted and n is not None
        tokens += n or 0
    texts = _texts(request) if request is not None else []
    if request is not None and len(values) != len(texts):
        raise ValueError("the answers do not hold one embedding per input")
    if not counted:
        tokens = sum(max(1, len(t) // 4) for t in texts)
    as_b64 = (request or {}).get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": float32_base64(v) if as_b64 else v}
        for i, v in enumerate(values)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _encode({"object": "list", "data": data, "model": model, "usage": usage})
