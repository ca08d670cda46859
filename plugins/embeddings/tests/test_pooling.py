"""CLS and last-token pooling give the encoder's own vectors, padding or not."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("pooling", ["cls", "last"])
def test_cls_and_last_token_pooling_values(minilm, pooling) -> None:
    from chutes_embeddings.model import EmbeddingModel

    model = EmbeddingModel.load(
        minilm, engine="transformers", pooling=pooling, normalize=True, max_length=None
    )
    # Two lengths in one batch, so the shorter one is right-padded.
    batch = model.tokenize(["a cat", "the stock market fell sharply on tuesday morning"])
    assert len(batch[0]) < len(batch[1])
    got = model.embed(batch)
    for row, ids in enumerate(batch):
        with torch.inference_mode():
            hidden = model.encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
        token = hidden[0] if pooling == "cls" else hidden[len(ids) - 1]
        expected = torch.nn.functional.normalize(token.float(), dim=-1).numpy()
        assert np.abs(got[row] - expected).max() < 1e-5, (pooling, row)
    # Not the same vector by accident: the two poolings differ.
    other = "last" if pooling == "cls" else "cls"
    model.pooling = other
    assert np.abs(model.embed(batch) - got).max() > 1e-3
