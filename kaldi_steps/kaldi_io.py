"""Kaldi's binary file formats in plain Python: models, trees, vectors, alignment archives.

Readers parse Kaldi-written ``final.mdl`` (TransitionModel + AmDiagGmm), ``tree``
(ContextDependency) and vectors such as ``final.occs`` *completely* into dataclasses
holding numpy arrays; the writers produce the same bytes back. Text mode (Kaldi's
``--binary=false``) is read and written too: text trees are byte-identical to Kaldi's
own text writer, text floats keep 6 significant digits as Kaldi's. The format follows
Kaldi's ``src/base/io-funcs``: a binary
file starts with ``"\\0B"``; a token is written followed by a space; an integer or
float is one size byte (negative for unsigned types) then its little-endian bytes;
a float vector is ``FV`` (``DV`` for double) + size + raw data.

Bridges to ``kaldi_hmm_gmm`` (khg) objects go through their pickle state (see
``/work/shared/notes/kaldi-in-python.md``): :func:`read_model`, :func:`write_model`,
:func:`read_tree`, :func:`write_tree`.

Alignment archives (``ali.N.gz``) are gzipped Kaldi archives of int32 vectors, as
``gmm-align-compiled ... | gzip -c`` writes them.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> write_ali_archive(os.path.join(d, "ali.1.gz"), [("utt1", np.array([1, 1, 2], dtype=np.int32))])
1
>>> dict(iter_ali_archive(os.path.join(d, "ali.1.gz")))["utt1"].tolist()
[1, 1, 2]
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np

from ..pipeline.io import atomic_open

BINARY_HEADER = b"\0B"


class KaldiFormatError(ValueError):
    """A file does not follow the Kaldi format expected at some position."""


# ---------------------------------------------------------------------------------------
# Low-level reading (binary and text) and binary writing.
# ---------------------------------------------------------------------------------------

class KaldiReader:
    """Reads Kaldi basic types from an in-memory file, in binary or text mode.

    >>> r = KaldiReader(b"\\0B<A> \\x04\\x07\\x00\\x00\\x00")
    >>> r.expect_token("<A>"); r.read_int()
    7
    """

    def __init__(self, data: bytes, name: str = "<bytes>", binary: bool | None = None):
        """``binary=None``: decided by the ``"\\0B"`` header; True/False: headerless data in that mode."""
        self.name = name
        self.data = data
        if binary is None:
            self.binary = data.startswith(BINARY_HEADER)
            self.pos = 2 if self.binary else 0
        else:
            self.binary, self.pos = binary, 0

    # -- helpers
    @contextlib.contextmanager
    def checked(self) -> Iterator[None]:
        """Reading inside it: a value that does not parse (a text number ``'5]'``, a ragged matrix) is this
        file's :class:`KaldiFormatError` at the position reached, not a bare ``ValueError``."""
        try:
            yield
        except KaldiFormatError:
            raise
        except ValueError as e:
            raise self._fail(str(e)) from None

    def _fail(self, what: str) -> KaldiFormatError:
        return KaldiFormatError(f"{self.name}: {what} at byte {self.pos}")

    def _skip_space(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in b" \t\n\r":
            self.pos += 1

    def at_end(self) -> bool:
        if not self.binary:
            self._skip_space()
        return self.pos >= len(self.data)

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self._fail(f"unexpected end of file (wanted {n} bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _word(self) -> str:
        self._skip_space()
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] not in b" \t\n\r":
            self.pos += 1
        if start == self.pos:
            raise self._fail("unexpected end of file (wanted a word)")
        return self._text(self.data[start:self.pos])

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise self._fail(f"expected a token or number, got the bytes {raw[:16]!r}") from None

    def peek_char(self) -> str:
        if not self.binary:
            self._skip_space()
        if self.pos >= len(self.data):
            raise self._fail("unexpected end of file")
        return chr(self.data[self.pos])

    # -- tokens
    def read_token(self) -> str:
        if not self.binary:
            return self._word()
        end = self.data.find(b" ", self.pos)
        if end < 0:
            raise self._fail("unterminated token")
        token = self._text(self.data[self.pos:end])
        self.pos = end + 1
        return token

    def expect_token(self, expected: str) -> None:
        token = self.read_token()
        if token != expected:
            raise self._fail(f"expected token {expected!r}, got {token!r}")

    # -- numbers
    def read_int(self, signed: bool = True) -> int:
        if not self.binary:
            return int(self._word())
        size = struct.unpack("b", self._take(1))[0]
        want = 4 if signed else -4
        if size != want:
            raise self._fail(f"expected a {'signed' if signed else 'unsigned'} 32-bit int (size byte {want}), "
                             f"got size byte {size}")
        return struct.unpack("<i" if signed else "<I", self._take(4))[0]

    def read_float(self) -> float:
        if not self.binary:
            return float(self._word())
        size = self._take(1)[0]
        if size == 4:
            return struct.unpack("<f", self._take(4))[0]
        if size == 8:
            return struct.unpack("<d", self._take(8))[0]
        raise self._fail(f"expected a float (size byte 4 or 8), got size byte {size}")

    def read_int_vector(self) -> np.ndarray:
        """Kaldi's ``ReadIntegerVector`` of int32: size byte, raw int32 count, raw data."""
        if not self.binary:
            return np.array(self._bracketed(), dtype=np.int32)
        size = self._take(1)[0]
        if size != 4:
            raise self._fail(f"expected an int32 vector (element size 4), got element size {size}")
        (count,) = struct.unpack("<i", self._take(4))
        return np.frombuffer(self._take(4 * count), dtype="<i4").astype(np.int32)

    def read_vector(self) -> np.ndarray:
        """A Kaldi ``Vector<float>`` (``FV``) or ``Vector<double>`` (``DV``)."""
        if not self.binary:
            return np.array(self._bracketed(), dtype=np.float32)
        token = self.read_token()
        if token not in ("FV", "DV"):
            raise self._fail(f"expected FV or DV, got {token!r}")
        dtype = "<f4" if token == "FV" else "<f8"
        n = self.read_int()
        return np.frombuffer(self._take(n * np.dtype(dtype).itemsize), dtype=dtype).astype(dtype[1:])

    def read_matrix(self) -> np.ndarray:
        """A Kaldi ``Matrix<float>`` (``FM``) or ``Matrix<double>`` (``DM``)."""
        if not self.binary:
            return self._text_matrix()
        token = self.read_token()
        if token not in ("FM", "DM"):
            raise self._fail(f"expected FM or DM (compressed matrices are not supported), got {token!r}")
        dtype = "<f4" if token == "FM" else "<f8"
        rows, cols = self.read_int(), self.read_int()
        flat = np.frombuffer(self._take(rows * cols * np.dtype(dtype).itemsize), dtype=dtype)
        return flat.astype(dtype[1:]).reshape(rows, cols)

    def _bracketed(self) -> list[float]:
        if self._word() != "[":
            raise self._fail("expected '['")
        values = []
        while True:
            word = self._word()
            if word == "]":
                return values
            values.append(float(word))

    def _text_matrix(self) -> np.ndarray:
        if self._word() != "[":
            raise self._fail("expected '['")
        end = self.data.find(b"]", self.pos)
        if end < 0:
            raise self._fail("unterminated matrix")
        lines = [line.split() for line in self.data[self.pos:end].decode().splitlines()]
        self.pos = end + 1
        rows = [[float(x) for x in line] for line in lines if line]
        return np.array(rows, dtype=np.float32).reshape(len(rows), -1 if rows else 0)


class KaldiWriter:
    """Writes Kaldi basic types, mirroring :class:`KaldiReader`.

    Binary mode is exact. Text mode follows Kaldi's text layout (C++ stream defaults, i.e.
    ``%g`` with 6 significant digits, so floats are rounded, as Kaldi's ``--binary=false``).
    """

    def __init__(self, header: bool = True, binary: bool = True):
        self.buf = io.BytesIO()
        self.binary = binary
        if header and binary:
            self.buf.write(BINARY_HEADER)

    def getvalue(self) -> bytes:
        return self.buf.getvalue()

    def _text(self, text: str) -> None:
        self.buf.write(text.encode())

    def newline(self) -> None:
        """Kaldi's ``if (!binary) os << "\\n"``."""
        if not self.binary:
            self._text("\n")

    def token(self, token: str) -> None:
        self.buf.write(token.encode() + b" ")

    def int(self, value: int, signed: bool = True) -> None:
        if not self.binary:
            self._text(f"{int(value)} ")
            return
        self.buf.write(struct.pack("<bi" if signed else "<bI", 4 if signed else -4, int(value)))

    def float(self, value: float, double: bool = False) -> None:
        if not self.binary:
            self._text(f"{float(value):g} ")
            return
        self.buf.write(struct.pack("<bd", 8, value) if double else struct.pack("<bf", 4, value))

    def int_vector(self, values) -> None:
        arr = np.asarray(values, dtype="<i4")
        if not self.binary:
            self._text("[ " + "".join(f"{int(x)} " for x in arr) + "]\n")
            return
        self.buf.write(struct.pack("<bi", 4, arr.size))
        self.buf.write(arr.tobytes())

    def vector(self, values: np.ndarray) -> None:
        double = np.asarray(values).dtype == np.float64
        arr = np.asarray(values, dtype="<f8" if double else "<f4")
        if not self.binary:
            self._text(" [ " + "".join(f"{float(x):g} " for x in arr) + "]\n")
            return
        self.token("DV" if double else "FV")
        self.int(arr.size)
        self.buf.write(arr.tobytes())

    def matrix(self, values: np.ndarray) -> None:
        double = np.asarray(values).dtype == np.float64
        arr = np.ascontiguousarray(values, dtype="<f8" if double else "<f4")
        if not self.binary:
            if arr.shape[1] == 0:
                self._text(" [ ]\n")
            else:
                rows = "".join("\n  " + "".join(f"{float(x):g} " for x in row) for row in arr)
                self._text(" [" + rows + "]\n")
            return
        self.token("DM" if double else "FM")
        self.int(arr.shape[0])
        self.int(arr.shape[1])
        self.buf.write(arr.tobytes())


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------
# HMM topology and transition model (src/hmm/hmm-topology.cc, transition-model.cc).
# ---------------------------------------------------------------------------------------

@dataclass
class HmmState:
    """One state of a phone's HMM; pdf classes are -1 for the non-emitting final state."""

    forward_pdf_class: int
    self_loop_pdf_class: int
    transitions: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Topology:
    """Kaldi's ``HmmTopology``: which HMM (``entries[phone2idx[phone]]``) each phone uses."""

    phones: list[int]
    phone2idx: list[int]
    entries: list[list[HmmState]]

    @property
    def is_hmm(self) -> bool:
        return all(s.forward_pdf_class == s.self_loop_pdf_class for e in self.entries for s in e)

    def for_phone(self, phone: int) -> list[HmmState]:
        if not 0 <= phone < len(self.phone2idx) or self.phone2idx[phone] < 0:
            raise KeyError(f"phone {phone} is not in the topology")
        return self.entries[self.phone2idx[phone]]

    def num_pdf_classes(self, phone: int) -> int:
        return 1 + max(max(s.forward_pdf_class, s.self_loop_pdf_class) for s in self.for_phone(phone))

    def to_text(self) -> str:
        """Kaldi's text topology, as ``khg.HmmTopology().read`` and ``lang/topo`` use."""
        lines = ["<Topology>"]
        for i, entry in enumerate(self.entries):
            phones = [str(p) for p, idx in enumerate(self.phone2idx) if idx == i]
            lines += ["<TopologyEntry>", "<ForPhones>", " ".join(phones), "</ForPhones>"]
            for j, state in enumerate(entry):
                parts = [f"<State> {j}"]
                if state.forward_pdf_class != -1:
                    if state.forward_pdf_class == state.self_loop_pdf_class:
                        parts.append(f"<PdfClass> {state.forward_pdf_class}")
                    else:
                        parts.append(f"<ForwardPdfClass> {state.forward_pdf_class} "
                                     f"<SelfLoopPdfClass> {state.self_loop_pdf_class}")
                parts += [f"<Transition> {dst} {prob:g}" for dst, prob in state.transitions]
                parts.append("</State>")
                lines.append(" ".join(parts))
            lines.append("</TopologyEntry>")
        lines.append("</Topology>")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> "Topology":
        """Parse Kaldi's human-readable topology (``lang/topo``)."""
        words = text.split()
        pos = 0

        def next_word() -> str:
            nonlocal pos
            if pos >= len(words):
                raise KaldiFormatError("topology: unexpected end of text")
            pos += 1
            return words[pos - 1]

        if next_word() != "<Topology>":
            raise KaldiFormatError("topology: expected <Topology>")
        entries, phone2idx, phones = [], [], []
        while (word := next_word()) != "</Topology>":
            if word != "<TopologyEntry>" or next_word() != "<ForPhones>":
                raise KaldiFormatError(f"topology: expected <TopologyEntry> <ForPhones>, got {word}")
            entry_phones = []
            while (word := next_word()) != "</ForPhones>":
                entry_phones.append(int(word))
            entry: list[HmmState] = []
            word = next_word()
            while word != "</TopologyEntry>":
                if word != "<State>" or int(next_word()) != len(entry):
                    raise KaldiFormatError("topology: states must be <State> 0, 1, ... in order")
                state = HmmState(-1, -1, [])
                word = next_word()
                if word == "<PdfClass>":
                    state.forward_pdf_class = state.self_loop_pdf_class = int(next_word())
                    word = next_word()
                elif word == "<ForwardPdfClass>":
                    state.forward_pdf_class = int(next_word())
                    if next_word() != "<SelfLoopPdfClass>":
                        raise KaldiFormatError("topology: <ForwardPdfClass> without <SelfLoopPdfClass>")
                    state.self_loop_pdf_class = int(next_word())
                    word = next_word()
                while word == "<Transition>":
                    state.transitions.append((int(next_word()), float(next_word())))
                    word = next_word()
                if word != "</State>":
                    raise KaldiFormatError(f"topology: unexpected {word!r} in a state")
                entry.append(state)
                word = next_word()
            for p in entry_phones:
                if len(phone2idx) <= p:
                    phone2idx += [-1] * (p + 1 - len(phone2idx))
                if phone2idx[p] != -1:
                    raise KaldiFormatError(f"topology: phone {p} is in two entries")
                phone2idx[p] = len(entries)
                phones.append(p)
            entries.append(entry)
        return cls(sorted(phones), phone2idx, entries)


def _read_topology(r: KaldiReader) -> Topology:
    r.expect_token("<Topology>")
    if not r.binary:
        end = r.data.find(b"</Topology>", r.pos)
        if end < 0:
            raise r._fail("unterminated <Topology>")
        topo = Topology.from_text("<Topology> " + r._text(r.data[r.pos:end]) + " </Topology>")
        r.pos = end + len(b"</Topology>")
        return topo
    phones = r.read_int_vector().tolist()
    phone2idx = r.read_int_vector().tolist()
    n = r.read_int()
    is_hmm = True
    if n == -1:  # newer Kaldi: -1 flags the format with separate self-loop pdf classes.
        is_hmm = False
        n = r.read_int()
    entries = []
    for _ in range(n):
        entry = []
        for _ in range(r.read_int()):
            fwd = r.read_int()
            loop = fwd if is_hmm else r.read_int()
            transitions = [(r.read_int(), r.read_float()) for _ in range(r.read_int())]
            entry.append(HmmState(fwd, loop, transitions))
        entries.append(entry)
    r.expect_token("</Topology>")
    if any(not -1 <= i < len(entries) for i in phone2idx):
        raise r._fail(f"the topology maps a phone to an entry outside its {len(entries)} entries")
    return Topology(phones, phone2idx, entries)


def _write_topology(w: KaldiWriter, topo: Topology) -> None:
    w.token("<Topology>")
    is_hmm = topo.is_hmm
    if not w.binary:
        w.newline()
        for i, entry in enumerate(topo.entries):
            w.token("<TopologyEntry>")
            w.newline()
            w.token("<ForPhones>")
            w.newline()
            w._text("".join(f"{p} " for p, idx in enumerate(topo.phone2idx) if idx == i) + "\n")
            w.token("</ForPhones>")
            w.newline()
            for j, state in enumerate(entry):
                w.token("<State>")
                w.int(j)
                if state.forward_pdf_class != -1:
                    if is_hmm:
                        w.token("<PdfClass>")
                        w.int(state.forward_pdf_class)
                    else:
                        w.token("<ForwardPdfClass>")
                        w.int(state.forward_pdf_class)
                        w.token("<SelfLoopPdfClass>")
                        w.int(state.self_loop_pdf_class)
                for dst, prob in state.transitions:
                    w.token("<Transition>")
                    w.int(dst)
                    w.float(prob)
                w.token("</State>")
                w.newline()
            w.token("</TopologyEntry>")
            w.newline()
        w.token("</Topology>")
        w.newline()
        return
    w.int_vector(topo.phones)
    w.int_vector(topo.phone2idx)
    if not is_hmm:
        w.int(-1)
    w.int(len(topo.entries))
    for entry in topo.entries:
        w.int(len(entry))
        for state in entry:
            w.int(state.forward_pdf_class)
            if not is_hmm:
                w.int(state.self_loop_pdf_class)
            w.int(len(state.transitions))
            for dst, prob in state.transitions:
                w.int(dst)
                w.float(prob)
    w.token("</Topology>")


@dataclass
class TransitionModel:
    """Kaldi's ``TransitionModel``.

    ``tuples[s - 1] = (phone, hmm_state, forward_pdf, self_loop_pdf)`` for transition-state
    ``s`` (1-based); ``log_probs[tid]`` for transition-id ``tid`` (index 0 unused).
    The derived tables are computed as Kaldi's ``ComputeDerived`` does.
    """

    topo: Topology
    tuples: np.ndarray  # (num_transition_states, 4) int32
    log_probs: np.ndarray  # float32, num_transition_ids + 1

    def __post_init__(self):
        self.tuples = np.asarray(self.tuples, dtype=np.int32).reshape(-1, 4)
        self.log_probs = np.asarray(self.log_probs, dtype=np.float32)
        self._compute_derived()

    def _compute_derived(self) -> None:
        state2id = [0, 1]
        id2state, id2pdf, id2index, self_loop = [0], [0], [0], [False]
        for s, (phone, hmm_state, fwd_pdf, loop_pdf) in enumerate(self.tuples.tolist(), start=1):
            transitions = self.topo.for_phone(phone)[hmm_state].transitions
            for k, (dst, _) in enumerate(transitions):
                is_loop = dst == hmm_state
                id2state.append(s)
                id2index.append(k)
                self_loop.append(is_loop)
                id2pdf.append(loop_pdf if is_loop else fwd_pdf)
            state2id.append(state2id[-1] + len(transitions))
        self.state2id = np.array(state2id, dtype=np.int32)
        self.id2state = np.array(id2state, dtype=np.int32)
        self.id2pdf = np.array(id2pdf, dtype=np.int32)
        self.id2index = np.array(id2index, dtype=np.int32)
        self.id_is_self_loop = np.array(self_loop, dtype=bool)
        if len(self.log_probs) != len(id2state):
            raise KaldiFormatError(f"TransitionModel: {len(self.log_probs)} log-probs for "
                                   f"{len(id2state) - 1} transition-ids (+1)")

    @property
    def num_pdfs(self) -> int:
        return int(self.tuples[:, 2:].max()) + 1 if len(self.tuples) else 0

    @property
    def num_transition_ids(self) -> int:
        return len(self.id2state) - 1

    @property
    def num_transition_states(self) -> int:
        return len(self.tuples)

    def non_self_loop_log_probs(self) -> np.ndarray:
        """Per transition-state ``log(1 - p(self-loop))`` (index 0 unused), in float32 as Kaldi."""
        out = np.zeros(self.num_transition_states + 1, dtype=np.float32)
        for tid in np.nonzero(self.id_is_self_loop)[0]:
            p = np.float32(1.0) - np.exp(self.log_probs[tid])
            out[self.id2state[tid]] = np.log(max(p, np.float32(1e-10)))
        return out


def _read_transition_model(r: KaldiReader) -> TransitionModel:
    r.expect_token("<TransitionModel>")
    topo = _read_topology(r)
    kind = r.read_token()
    if kind not in ("<Triples>", "<Tuples>"):
        raise r._fail(f"expected <Triples> or <Tuples>, got {kind!r}")
    rows = []
    for _ in range(r.read_int()):
        phone, hmm_state, fwd = r.read_int(), r.read_int(), r.read_int()
        rows.append((phone, hmm_state, fwd, fwd if kind == "<Triples>" else r.read_int()))
        try:
            in_topology = 0 <= hmm_state < len(topo.for_phone(phone))
        except KeyError:
            in_topology = False
        if not in_topology:
            raise r._fail(f"transition state {len(rows)} is phone {phone}, HMM state {hmm_state}: "
                          "not in the topology") from None
    r.expect_token(kind.replace("<", "</"))
    r.expect_token("<LogProbs>")
    log_probs = r.read_vector()
    r.expect_token("</LogProbs>")
    r.expect_token("</TransitionModel>")
    try:
        return TransitionModel(topo, np.array(rows, dtype=np.int32).reshape(-1, 4), log_probs)
    except KaldiFormatError as e:    # the tables do not fit together: name the file
        raise r._fail(str(e)) from None


def _write_transition_model(w: KaldiWriter, tm: TransitionModel) -> None:
    is_hmm = tm.topo.is_hmm
    w.token("<TransitionModel>")
    w.newline()
    _write_topology(w, tm.topo)
    w.token("<Triples>" if is_hmm else "<Tuples>")
    w.int(len(tm.tuples))
    w.newline()
    for phone, hmm_state, fwd, loop in tm.tuples.tolist():
        w.int(phone)
        w.int(hmm_state)
        w.int(fwd)
        if not is_hmm:
            w.int(loop)
        w.newline()
    w.token("</Triples>" if is_hmm else "</Tuples>")
    w.newline()
    w.token("<LogProbs>")
    w.newline()
    w.vector(tm.log_probs.astype(np.float32))
    w.token("</LogProbs>")
    w.newline()
    w.token("</TransitionModel>")
    w.newline()


# ---------------------------------------------------------------------------------------
# Diagonal GMMs (src/gmm/diag-gmm.cc, am-diag-gmm.cc).
# ---------------------------------------------------------------------------------------

@dataclass
class DiagGmm:
    """One pdf: ``means = means_invvars / inv_vars``, ``vars = 1 / inv_vars``."""

    gconsts: np.ndarray  # (G,)
    weights: np.ndarray  # (G,)
    means_invvars: np.ndarray  # (G, D)
    inv_vars: np.ndarray  # (G, D)

    @property
    def means(self) -> np.ndarray:
        return self.means_invvars / self.inv_vars

    @property
    def vars(self) -> np.ndarray:
        return 1.0 / self.inv_vars

    @property
    def num_gauss(self) -> int:
        return len(self.weights)


@dataclass
class AmDiagGmm:
    dim: int
    pdfs: list[DiagGmm]

    @property
    def num_pdfs(self) -> int:
        return len(self.pdfs)

    @property
    def num_gauss(self) -> int:
        return sum(p.num_gauss for p in self.pdfs)


def _read_diag_gmm(r: KaldiReader) -> DiagGmm:
    r.expect_token("<DiagGMM>")
    token = r.read_token()
    gconsts = None
    if token == "<GCONSTS>":
        gconsts = r.read_vector()
        token = r.read_token()
    if token != "<WEIGHTS>":
        raise r._fail(f"expected <WEIGHTS>, got {token!r}")
    weights = r.read_vector()
    r.expect_token("<MEANS_INVVARS>")
    means_invvars = r.read_matrix()
    r.expect_token("<INV_VARS>")
    inv_vars = r.read_matrix()
    r.expect_token("</DiagGMM>")
    if gconsts is None:
        gconsts = compute_gconsts(weights, means_invvars, inv_vars)
    return DiagGmm(gconsts, weights, means_invvars, inv_vars)


def compute_gconsts(weights: np.ndarray, means_invvars: np.ndarray, inv_vars: np.ndarray) -> np.ndarray:
    """Per-Gaussian constant of the log-likelihood, as Kaldi's ``DiagGmm::ComputeGconsts``."""
    dim = inv_vars.shape[1]
    mi, iv = means_invvars.astype(np.float64), inv_vars.astype(np.float64)
    g = (np.log(weights.astype(np.float64)) - 0.5 * dim * np.log(2 * np.pi)
         + 0.5 * np.log(iv).sum(1) - 0.5 * (mi * mi / iv).sum(1))
    return g.astype(weights.dtype)


def _write_diag_gmm(w: KaldiWriter, gmm: DiagGmm) -> None:
    w.token("<DiagGMM>")
    w.newline()
    w.token("<GCONSTS>")
    w.vector(gmm.gconsts)
    w.token("<WEIGHTS>")
    w.vector(gmm.weights)
    w.token("<MEANS_INVVARS>")
    w.matrix(gmm.means_invvars)
    w.token("<INV_VARS>")
    w.matrix(gmm.inv_vars)
    w.token("</DiagGMM>")
    w.newline()


def _read_am_diag_gmm(r: KaldiReader) -> AmDiagGmm:
    r.expect_token("<DIMENSION>")
    dim = r.read_int()
    r.expect_token("<NUMPDFS>")
    pdfs = [_read_diag_gmm(r) for _ in range(r.read_int())]
    for i, pdf in enumerate(pdfs):
        if pdf.means_invvars.shape[1] != dim:
            raise KaldiFormatError(f"AmDiagGmm: pdf {i} has dimension {pdf.means_invvars.shape[1]}, not {dim}")
    return AmDiagGmm(dim, pdfs)


def _write_am_diag_gmm(w: KaldiWriter, am: AmDiagGmm) -> None:
    w.token("<DIMENSION>")
    w.int(am.dim)
    w.token("<NUMPDFS>")
    w.int(len(am.pdfs))
    for pdf in am.pdfs:
        _write_diag_gmm(w, pdf)


@dataclass
class GmmModel:
    """The contents of a Kaldi ``final.mdl`` of a GMM system."""

    transition_model: TransitionModel
    am_gmm: AmDiagGmm


def parse_model(path: str | os.PathLike) -> GmmModel:
    """Parse a Kaldi ``final.mdl`` (TransitionModel + AmDiagGmm) completely into Python objects."""
    r = KaldiReader(_read_bytes(path), str(path))
    with r.checked():
        tm = _read_transition_model(r)
        am = _read_am_diag_gmm(r)
    if not r.at_end():
        raise r._fail("trailing data after the AmDiagGmm")
    if am.num_pdfs != tm.num_pdfs:
        raise KaldiFormatError(f"{path}: transition model has {tm.num_pdfs} pdfs, GMM has {am.num_pdfs}")
    return GmmModel(tm, am)


def model_to_bytes(model: GmmModel, binary: bool = True) -> bytes:
    w = KaldiWriter(binary=binary)
    _write_transition_model(w, model.transition_model)
    _write_am_diag_gmm(w, model.am_gmm)
    return w.getvalue()


def save_model(path: str | os.PathLike, model: GmmModel, binary: bool = True) -> None:
    """Write a :class:`GmmModel` as a Kaldi ``final.mdl`` (atomically; text if not ``binary``)."""
    _write_bytes(path, model_to_bytes(model, binary))


# ---------------------------------------------------------------------------------------
# Trees: ContextDependency and EventMaps (src/tree/context-dep.cc, event-map.cc).
# ---------------------------------------------------------------------------------------

@dataclass
class ConstantEventMap:
    answer: int

    def map(self, event: dict[int, int]) -> int | None:
        return self.answer


@dataclass
class TableEventMap:
    key: int
    table: list  # of EventMap | None, indexed by the value of ``key``

    def map(self, event: dict[int, int]) -> int | None:
        value = event.get(self.key)
        if value is None or not 0 <= value < len(self.table) or self.table[value] is None:
            return None
        return self.table[value].map(event)


@dataclass
class SplitEventMap:
    key: int
    yes_set: list[int]
    yes: "EventMap"
    no: "EventMap"

    def map(self, event: dict[int, int]) -> int | None:
        value = event.get(self.key)
        if value is None:
            return None
        return (self.yes if value in self._yes_lookup() else self.no).map(event)

    def _yes_lookup(self) -> frozenset:
        cached = self.__dict__.get("_lookup")
        if cached is None:
            cached = self.__dict__["_lookup"] = frozenset(self.yes_set)
        return cached


EventMap = Union[ConstantEventMap, TableEventMap, SplitEventMap]


def _read_event_map(r: KaldiReader):
    c = r.peek_char()
    token = r.read_token()
    if token == "NULL":
        return None
    if token == "CE":
        return ConstantEventMap(r.read_int())
    if token == "TE":
        key = r.read_int()
        size = r.read_int(signed=False)
        r.expect_token("(")
        table = [_read_event_map(r) for _ in range(size)]
        r.expect_token(")")
        return TableEventMap(key, table)
    if token == "SE":
        key = r.read_int()
        yes_set = r.read_int_vector().tolist()
        r.expect_token("{")
        yes, no = _read_event_map(r), _read_event_map(r)
        r.expect_token("}")
        if yes is None or no is None:
            raise r._fail("SplitEventMap with a NULL child")
        return SplitEventMap(key, yes_set, yes, no)
    raise r._fail(f"unexpected event-map token {token!r} (first char {c!r})")


def _write_event_map(w: KaldiWriter, emap) -> None:
    if emap is None:
        w.token("NULL")
    elif isinstance(emap, ConstantEventMap):
        w.token("CE")
        w.int(emap.answer)
    elif isinstance(emap, TableEventMap):
        w.token("TE")
        w.int(emap.key)
        w.int(len(emap.table), signed=False)
        w.token("(")
        for child in emap.table:
            _write_event_map(w, child)
        w.token(")")
        w.newline()
    elif isinstance(emap, SplitEventMap):
        w.token("SE")
        w.int(emap.key)
        w.int_vector(sorted(set(emap.yes_set)))
        w.token("{")
        _write_event_map(w, emap.yes)
        _write_event_map(w, emap.no)
        w.token("}")
        w.newline()
    else:
        raise TypeError(f"not an event map: {type(emap).__name__}")


@dataclass
class ContextDependency:
    """Kaldi's tree: ``N``-phone context, central position ``P``, event map ``to_pdf``.

    Events map key ``-1`` to the pdf-class and keys ``0..N-1`` to the phones of the context.
    """

    N: int
    P: int
    to_pdf: EventMap

    def compute(self, phones: list[int], pdf_class: int) -> int | None:
        """The pdf of a context window ``phones`` (length N; 0 = no phone) and pdf-class."""
        event = {i: p for i, p in enumerate(phones)}
        event[-1] = pdf_class
        return self.to_pdf.map(event)

    def leaves(self) -> list[int]:
        found, stack = [], [self.to_pdf]
        while stack:
            node = stack.pop()
            if isinstance(node, ConstantEventMap):
                found.append(node.answer)
            elif isinstance(node, TableEventMap):
                stack.extend(c for c in node.table if c is not None)
            elif isinstance(node, SplitEventMap):
                stack += [node.yes, node.no]
        return found

    @property
    def num_pdfs(self) -> int:
        return max(self.leaves()) + 1


def tree_from_bytes(data: bytes, name: str = "<tree>", binary: bool | None = None) -> ContextDependency:
    r = KaldiReader(data, name, binary)
    with r.checked():
        r.expect_token("ContextDependency")
        n, p = r.read_int(), r.read_int()
        r.expect_token("ToPdf")
        to_pdf = _read_event_map(r)
        r.expect_token("EndContextDependency")
    if not r.at_end():
        raise r._fail("trailing data after EndContextDependency")
    return ContextDependency(n, p, to_pdf)


def parse_tree(path: str | os.PathLike) -> ContextDependency:
    """Parse a Kaldi ``tree`` file completely."""
    return tree_from_bytes(_read_bytes(path), str(path))


def tree_to_bytes(tree: ContextDependency, header: bool = True, binary: bool = True) -> bytes:
    w = KaldiWriter(header=header, binary=binary)
    w.token("ContextDependency")
    w.int(tree.N)
    w.int(tree.P)
    w.token("ToPdf")
    _write_event_map(w, tree.to_pdf)
    w.token("EndContextDependency")
    return w.getvalue()


def save_tree(path: str | os.PathLike, tree: ContextDependency, binary: bool = True) -> None:
    _write_bytes(path, tree_to_bytes(tree, binary=binary))


# ---------------------------------------------------------------------------------------
# Kaldi vectors on their own (final.occs), binary or text.
# ---------------------------------------------------------------------------------------

def _read_single(path: str | os.PathLike, kind: str) -> np.ndarray:
    """The one Kaldi ``kind`` ("vector", "matrix") a file holds, nothing after it."""
    r = KaldiReader(_read_bytes(path), str(path))
    with r.checked():
        value = getattr(r, f"read_{kind}")()
    if not r.at_end():
        raise r._fail(f"trailing data after the {kind}")
    return value


def _single_to_bytes(value: np.ndarray, kind: str, binary: bool) -> bytes:
    w = KaldiWriter(binary=binary)
    getattr(w, kind)(value)
    return w.getvalue()


def read_kaldi_vector(path: str | os.PathLike) -> np.ndarray:
    """A file holding one Kaldi vector (binary ``FV``/``DV`` or text ``[ ... ]``), e.g. ``final.occs``."""
    return _read_single(path, "vector")


def vector_to_bytes(vec: np.ndarray, binary: bool = True) -> bytes:
    return _single_to_bytes(vec, "vector", binary)


def write_kaldi_vector(path: str | os.PathLike, vec: np.ndarray, binary: bool = True) -> None:
    _write_bytes(path, vector_to_bytes(vec, binary))


# ---------------------------------------------------------------------------------------
# Kaldi matrices on their own (lda.mat, final.mat of LDA+MLLT), binary or text.
# ---------------------------------------------------------------------------------------

def read_kaldi_matrix(path: str | os.PathLike) -> np.ndarray:
    """A file holding one Kaldi matrix (binary ``FM``/``DM`` or text ``[ ... ]``), e.g. ``lda.mat``."""
    return _read_single(path, "matrix")


def matrix_to_bytes(mat: np.ndarray, binary: bool = True) -> bytes:
    return _single_to_bytes(mat, "matrix", binary)


def write_kaldi_matrix(path: str | os.PathLike, mat: np.ndarray, binary: bool = True) -> None:
    """Write ``mat`` as Kaldi does (``est-lda``, ``compose-transforms``): float32 (``FM``) unless
    ``mat`` is float64 (``DM``)."""
    _write_bytes(path, matrix_to_bytes(mat, binary))


# ---------------------------------------------------------------------------------------
# Bridges to kaldi_hmm_gmm objects.
# ---------------------------------------------------------------------------------------

def _from_state(cls, state: tuple):
    """A new khg object built by its pickle hook (``__setstate__`` must run on a fresh instance)."""
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj


def topology_to_khg(topo: Topology):
    """A ``khg.HmmTopology`` holding exactly ``topo``."""
    import kaldi_hmm_gmm as khg
    import _kaldi_hmm_gmm as _k

    entries = [[_from_state(_k.HmmState, (s.forward_pdf_class, s.self_loop_pdf_class,
                                          [(int(d), float(p)) for d, p in s.transitions]))
                for s in entry] for entry in topo.entries]
    return _from_state(khg.HmmTopology, (list(topo.phones), list(topo.phone2idx), entries))


def topology_from_khg(topo) -> Topology:
    phones, phone2idx, entries = topo.__getstate__()
    return Topology(list(phones), list(phone2idx),
                    [[HmmState(*s.__getstate__()[:2], [(int(d), float(p)) for d, p in s.__getstate__()[2]])
                      for s in e] for e in entries])


def transition_model_to_khg(tm: TransitionModel):
    """A ``khg.TransitionModel`` with ``tm``'s tuples and log-probs."""
    import kaldi_hmm_gmm as khg
    import _kaldi_hmm_gmm as _k

    tuples = [_from_state(_k.TransitionModelTuple, tuple(t)) for t in tm.tuples.tolist()]
    return _from_state(khg.TransitionModel, (
        tuples, topology_to_khg(tm.topo), tm.state2id.tolist(), tm.id2state.tolist(),
        tm.id2pdf.tolist(), tm.num_pdfs, [float(x) for x in tm.log_probs],
        [float(x) for x in tm.non_self_loop_log_probs()]))


def transition_model_from_khg(tm) -> TransitionModel:
    state = tm.__getstate__()
    tuples, topo, log_probs = state[0], state[1], state[6]
    return TransitionModel(topology_from_khg(topo), np.array([t.__getstate__() for t in tuples], dtype=np.int32),
                           np.array(log_probs, dtype=np.float32))


def am_gmm_to_khg(am: AmDiagGmm):
    """A ``khg.AmDiagGmm`` with ``am``'s Gaussians (its pickle state holds no gconsts: Kaldi recomputes them)."""
    import kaldi_hmm_gmm as khg

    state = []
    for pdf in am.pdfs:
        state += [np.ascontiguousarray(pdf.weights, dtype=np.float32),
                  np.ascontiguousarray(pdf.inv_vars, dtype=np.float32),
                  np.ascontiguousarray(pdf.means_invvars, dtype=np.float32)]
    return _from_state(khg.AmDiagGmm, tuple(state))


def am_gmm_from_khg(am) -> AmDiagGmm:
    pdfs = []
    for i in range(am.num_pdfs):
        g = am.get_pdf(i)
        pdfs.append(DiagGmm(np.array(g.gconsts, dtype=np.float32), np.array(g.weights, dtype=np.float32),
                            np.array(g.means_invvars, dtype=np.float32), np.array(g.inv_vars, dtype=np.float32)))
    return AmDiagGmm(int(am.dim), pdfs)


def read_model(path: str | os.PathLike):
    """Read a Kaldi ``final.mdl`` into ``(khg.TransitionModel, khg.AmDiagGmm)``."""
    model = parse_model(path)
    return transition_model_to_khg(model.transition_model), am_gmm_to_khg(model.am_gmm)


def write_model(path: str | os.PathLike, trans_model, am_gmm) -> None:
    """Write khg ``TransitionModel`` + ``AmDiagGmm`` as a Kaldi binary ``final.mdl`` (atomically).

    The khg objects have no Kaldi writers, so they go through :class:`GmmModel`.
    """
    save_model(path, GmmModel(transition_model_from_khg(trans_model), am_gmm_from_khg(am_gmm)))


def read_tree(path: str | os.PathLike):
    """Read a Kaldi ``tree`` into a ``khg.ContextDependency`` (validated by our parser first)."""
    return tree_to_khg(parse_tree(path))


def tree_to_khg(tree: ContextDependency):
    """A ``khg.ContextDependency`` from a parsed tree (via its pickle hook: Kaldi binary bytes)."""
    import kaldi_hmm_gmm as khg

    out = khg.ContextDependency.__new__(khg.ContextDependency)
    # The pickle state is the tree's binary bytes as a list of *signed* chars.
    data = tree_to_bytes(tree, header=False)
    out.__setstate__(([b - 256 if b > 127 else b for b in data],))
    return out


def tree_from_khg(ctx_dep) -> ContextDependency:
    (data,) = ctx_dep.__getstate__()
    return tree_from_bytes(bytes(b & 0xFF for b in data), "<khg.ContextDependency>", binary=True)


def write_tree(path: str | os.PathLike, ctx_dep) -> None:
    """Write a ``khg.ContextDependency`` (or a parsed :class:`ContextDependency`) as a Kaldi binary tree."""
    tree = ctx_dep if isinstance(ctx_dep, ContextDependency) else tree_from_khg(ctx_dep)
    save_tree(path, tree)


# ---------------------------------------------------------------------------------------
# Alignment archives: ali.N.gz
# ---------------------------------------------------------------------------------------

def write_ali_archive(path: str | os.PathLike, items: Iterable[tuple[str, np.ndarray]]) -> int:
    """Write ``(utt_id, transition-ids)`` pairs as a gzipped Kaldi binary archive, atomically.

    Returns the number of utterances written.
    """
    import kaldiio

    n = 0
    with atomic_open(path, "wb") as raw:
        # No name in the gzip header (as ``gzip -c`` from a pipe): it would be the temporary
        # file's, which names the writing process, and the same alignments would differ in bytes.
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            for utt_id, ali in items:
                if not utt_id or any(c.isspace() for c in utt_id):
                    raise ValueError(f"alignment archive {path}: invalid utterance id {utt_id!r}")
                kaldiio.save_ark(f, {utt_id: np.asarray(ali, dtype=np.int32)})
                n += 1
    return n


#: What gzip and kaldiio raise on a damaged archive (cut short by a killed job, or corrupted).
_DAMAGED_ARCHIVE = (EOFError, OSError, ValueError, AssertionError, RuntimeError, struct.error, UnicodeDecodeError)


def iter_ali_archive(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(utt_id, int32 transition-ids)`` from ``ali.N.gz`` (or an uncompressed ark).
    A damaged archive raises :class:`KaldiFormatError` naming it and the last utterance read."""
    import kaldiio

    opener = gzip.open if str(path).endswith(".gz") else open
    last, count = None, 0
    with opener(path, "rb") as f:   # a missing or unreadable file is not a damaged one: its own error
        try:
            for utt_id, ali in kaldiio.load_ark(f):
                last, count = utt_id, count + 1
                yield utt_id, np.asarray(ali, dtype=np.int32)
        except _DAMAGED_ARCHIVE as e:
            where = f"after utterance {last} ({count} read)" if last else "before its first utterance"
            raise KaldiFormatError(f"{path}: damaged alignment archive {where}: {type(e).__name__}: {e}") from e


def read_ali_dir(ali_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All alignments of a dir: ``ali.1.gz .. ali.<num_jobs>.gz`` (or every ``ali.*.gz``)."""
    ali_dir = Path(ali_dir)
    nj_file = ali_dir / "num_jobs"
    if nj_file.exists():
        nj = int(nj_file.read_text().split()[0])
        paths = [ali_dir / f"ali.{j}.gz" for j in range(1, nj + 1)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{ali_dir}: num_jobs={nj} but missing {', '.join(missing)}")
    else:
        paths = sorted(ali_dir.glob("ali.*.gz"), key=lambda p: int(p.name.split(".")[1]))
        if not paths:
            raise FileNotFoundError(f"{ali_dir}: no ali.*.gz files")
    out: dict[str, np.ndarray] = {}
    for path in paths:
        for utt_id, ali in iter_ali_archive(path):
            if utt_id in out:
                raise ValueError(f"{ali_dir}: utterance {utt_id} is in more than one archive")
            out[utt_id] = ali
    return out
