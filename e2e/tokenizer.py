"""BPE units from sentencepiece, with the id layout of ``docs/E2E_INTERFACE.md``.

``blank_id = 0``, sentencepiece piece ``i`` is id ``i + 1`` (so pieces are
``1 .. V-2``; sentencepiece's ``<unk>`` is id 1), and ``sos_id = eos_id = V - 1``.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> tok = train_bpe(["HELLO WORLD", "HELLO THERE", "WORLD PEACE"] * 20, os.path.join(d, "bpe.model"), vocab_size=30)
>>> tok.decode(tok.encode("HELLO WORLD"))
'HELLO WORLD'
>>> tok.blank_id, tok.sos_id == tok.eos_id == tok.vocab_size - 1
(0, True)
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from ..pipeline.io import atomic_path

log = logging.getLogger("weakalign")


class Tokenizer:
    blank_id = 0

    def __init__(self, model_path: str | Path):
        self.model_path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        self.vocab_size = self.sp.get_piece_size() + 2
        self.sos_id = self.eos_id = self.vocab_size - 1

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text, out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [int(i) - 1 for i in ids if 0 < int(i) < self.vocab_size - 1]
        return self.sp.decode(pieces)

    def pieces(self) -> list[str]:
        """Token names by id (``<blank>``, BPE pieces, ``<sos/eos>``)."""
        return ["<blank>"] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())] + ["<sos/eos>"]


def train_bpe(texts: Iterable[str], model_path: str | Path, vocab_size: int) -> Tokenizer:
    """Train a BPE model of ``vocab_size`` ids in total (incl. blank and sos/eos) on ``texts``; save it.

    On a small text sentencepiece may find fewer pieces; the vocabulary is then smaller (logged).
    """
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no training text for the BPE model")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="bpe",
        vocab_size=vocab_size - 2, hard_vocab_limit=False, character_coverage=1.0,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2,
    )
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(model.getvalue())
    tok = Tokenizer(model_path)
    if tok.vocab_size != vocab_size:
        log.info("BPE: asked for %d ids, the text gives %d", vocab_size, tok.vocab_size)
    return tok
