"""The exported alignments in another project: the README's loader snippet with only the
``weakalign[loader]`` packages, the global CMVN, -100 padding and speed perturbation.

The exported cuts are the session's real AN4 slice export (``an4_slice_exported``).
"""

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_custom_field
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from weakalign.align.loader import (IGNORE_INDEX, LABEL_PAD_VALUES, collate_labels, load_cut_labels,
                                    load_global_cmvn, perturb_speed_with_labels, stretch_labels)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SNIPPET_MARKER = "<!-- reuse-snippet:"
KALDI_MODULES = ("kaldi_hmm_gmm", "kaldifst", "kaldi_native_fbank", "kaldiio", "kaldialign", "kaldilm", "kaldingram")


def readme_block(marker: str, lang: str) -> str:
    """The first ```lang fenced block of README.md after ``marker``."""
    text = README.read_text()
    rest = text[text.index(marker):]
    start = rest.index(f"```{lang}\n") + len(f"```{lang}\n")
    return rest[start:rest.index("```", start)]


def loader_extra() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["loader"]


def required_distributions(requirements) -> set[str]:
    """The distributions ``requirements`` install: themselves and, recursively, what they require
    (without extras)."""
    todo, seen = [Requirement(r).name for r in requirements], set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for req in map(Requirement, metadata.requires(name) or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def loader_only_site(root: Path) -> Path:
    """A site dir holding links to the installed files of ``weakalign[loader]``'s distributions and
    their requirements, and weakalign's ``align`` package: what ``pip install <the extra>`` and
    ``pip install --no-deps weakalign`` give a fresh environment, as far as imports go."""
    site = root / "site"
    site.mkdir()
    for name in sorted(required_distributions(loader_extra())):
        dist = metadata.distribution(name)
        assert dist.files, f"{name} lists no files"
        for top in sorted({f.parts[0] for f in dist.files} - {"..", "__pycache__"}):
            if not (site / top).exists():
                os.symlink(dist.locate_file(top), site / top)
    (site / "weakalign").mkdir()
    os.symlink(REPO / "weakalign_ns" / "__init__.py", site / "weakalign" / "__init__.py")
    os.symlink(REPO / "align", site / "weakalign" / "align")
    return site


def run_python(code: str, cwd: Path, *, no_site: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    args = [sys.executable, *(["-S"] if no_site else []), "-c", code]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_the_readme_installs_exactly_the_loader_extra():
    extra = loader_extra()
    assert {canonicalize_name(Requirement(r).name) for r in extra} == {"lhotse", "torch", "numpy", "lilcom",
                                                                       "urllib3"}
    lines = readme_block("**Loading them elsewhere.**", "bash").splitlines()
    assert lines[0].split()[:2] == ["pip", "install"] and lines[0].split()[2:] == extra
    assert lines[1].startswith("pip install --no-deps ")
    pinned = {canonicalize_name(Requirement(r).name): r for r in
              tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert all(pinned[canonicalize_name(Requirement(r).name)] == r for r in extra)  # the same pins


def test_loader_modules_import_without_kaldi(tmp_path):
    """Every Kaldi module made unimportable (``sys.modules[name] = None``): the consumer-side modules
    still import, and pull in neither Kaldi nor weakalign's Kaldi-side packages."""
    code = (f"import sys\nfor name in {KALDI_MODULES!r}:\n    sys.modules[name] = None\n"
            "import weakalign.align.loader, weakalign.align.paths\n"
            "print(sorted(m for m in sys.modules if sys.modules[m] is not None and m.split('.')[0].startswith('kaldi')"
            " or m.startswith(('weakalign.pipeline', 'weakalign.kaldi_steps', 'weakalign.e2e'))))\n")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # The blocking bites: a module that imports Kaldi fails the same way.
    probe = run_python(code.replace("weakalign.align.loader, weakalign.align.paths", "weakalign.align.convert"),
                       tmp_path)
    assert probe.returncode != 0 and "kaldi" in probe.stderr


def test_the_readme_snippet_runs_verbatim_with_only_the_loader_extra(an4_slice_exported, tmp_path):
    """The README block, run from another directory by a Python without site-packages that sees only
    :func:`loader_only_site`; ``data/`` there links to the exported workspace's data root."""
    site = loader_only_site(tmp_path)
    work = tmp_path / "other_project"
    work.mkdir()
    os.symlink(an4_slice_exported.data_root, work / "data")
    snippet = readme_block(SNIPPET_MARKER, "python")
    code = (f"import sys, importlib.util, json\nsys.path.insert(0, {str(site)!r})\n"
            f"assert not any(importlib.util.find_spec(m) for m in {KALDI_MODULES!r})\n"
            f"exec(compile({snippet!r}, 'README.md', 'exec'))\n"
            "print(json.dumps({'feats': list(feats.shape), 'lens': lens.tolist(), 'targets': targets.tolist(),"
            " 'mean': float(feats[0, :lens[0]].mean()), 'senone': senone.tolist(), 'fast': fast.duration,"
            " 'kaldi': [m for m in sys.modules if m.startswith('kaldi')]}))\n")
    result = run_python(code, work, no_site=True)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["kaldi"] == []
    assert out["feats"][0] == 8 and out["feats"][2] == 80 and max(out["lens"]) == out["feats"][1]
    assert abs(out["mean"]) < 1.0  # normalised (raw log-mel fbank averages ~10)
    for row, n in zip(out["targets"], out["lens"]):
        valid = ((n - 1) // 2 - 1) // 2
        assert all(t >= 0 for t in row[:valid]) and all(t == IGNORE_INDEX for t in row[valid:])
    cut0 = CutSet.from_file(an4_slice_exported.ali_cuts("train"))[0]
    assert len(out["senone"]) == round(out["fast"] * 100) and out["fast"] < cut0.duration
    assert out["senone"] == stretch_labels(cut0.load_senone(), len(out["senone"]), 1.1).tolist()


@pytest.fixture(scope="module")
def train_cuts(an4_slice_exported):
    return CutSet.from_file(an4_slice_exported.ali_cuts("train")).to_eager()


def test_global_cmvn_normalises_the_train_fbank(an4_slice_exported, train_cuts):
    from weakalign.e2e.encoder import GlobalCMVN

    mean, std = load_global_cmvn(an4_slice_exported.fbank_stats)
    stats = json.loads(an4_slice_exported.fbank_stats.read_text())
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (80,)
    assert np.allclose(mean, stats["mean"]) and np.allclose(std, stats["std"])
    feats = np.concatenate([c.load_features() for c in train_cuts])
    normed = (feats - mean) / std
    assert np.abs(normed.mean(0)).max() < 1e-3 and np.abs(normed.std(0) - 1).max() < 1e-3
    assert np.abs(feats.mean(0)).max() > 1      # so the check above is the normalisation's doing
    module = GlobalCMVN(80)
    module.load_stats(an4_slice_exported.fbank_stats)  # the E2E model's CMVN: the same numbers
    assert torch.allclose(module(torch.from_numpy(feats[:100])), torch.from_numpy(normed[:100]))


def test_label_padding_is_the_ignore_index_not_a_senone(train_cuts):
    batch = list(train_cuts)[:5]
    padded, lens = collate_labels(batch, "senone")
    assert lens.tolist() == [c.num_frames for c in batch] and len(set(lens.tolist())) > 1
    for row, cut in zip(padded, batch):
        n = cut.num_frames
        assert row[:n].tolist() == cut.load_senone().tolist() and (row[n:] == IGNORE_INDEX).all()
    assert any((c.load_senone() == 0).any() for c in batch)  # 0 is a real senone here
    # lhotse's defaults pad with 0, a senone that occurs in the data; the documented arguments do not
    cuts = CutSet.from_cuts(batch)
    lhotse_padded, _ = collate_custom_field(cuts, "senone", pad_value=IGNORE_INDEX)
    assert torch.equal(lhotse_padded, padded)
    short = min(batch, key=lambda c: c.duration)
    assert (short.pad(duration=short.duration + 0.3).load_senone()[short.num_frames:] == 0).all()
    assert (short.pad(duration=short.duration + 0.3, pad_value_dict=LABEL_PAD_VALUES)
            .load_senone()[short.num_frames:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_stretches_the_labels_with_the_audio(train_cuts, factor):
    from weakalign.pipeline.acoustic_features import KnfFbank

    cut = train_cuts[0]
    fast = perturb_speed_with_labels(cut, factor)
    assert cut.has_features  # lhotse's perturb_speed would have detached them from the cut it was given
    frames = KnfFbank().extract(fast.load_audio(), fast.sampling_rate).shape[0]
    for field in ("senone", "phone"):
        labels = load_cut_labels(fast, field)
        assert len(labels) == frames   # one label per fbank frame of the perturbed audio
        assert labels.tolist() == stretch_labels(cut.load_custom(field), frames, factor).tolist()
    runs = lambda x: [int(v) for i, v in enumerate(x) if i == 0 or x[i - 1] != v]  # noqa: E731
    if factor < 1:  # slower: every senone run survives, in order
        assert runs(load_cut_labels(fast)) == runs(cut.load_senone())
    again = perturb_speed_with_labels(fast, 1 / factor)   # and back: the original frame count
    assert abs(len(load_cut_labels(again)) - cut.num_frames) <= 1


def test_lhotse_speed_perturbation_of_labelled_cuts_is_refused(train_cuts):
    cut = train_cuts[0]
    plain = cut.drop_features().perturb_speed(1.1)
    assert len(plain.load_senone()) < cut.num_frames     # lhotse: the original labels, cut short
    with pytest.raises(ValueError, match="perturb_speed_with_labels"):
        load_cut_labels(plain)
    with pytest.raises(ValueError, match="perturb_speed_with_labels"):
        collate_labels([cut, plain])
    with pytest.raises(ValueError, match="perturb_speed_with_labels"):
        load_cut_labels(perturb_speed_with_labels(cut, 1.1).perturb_speed(0.9))
    with pytest.raises(ValueError, match="without audio"):
        perturb_speed_with_labels(cut.drop_recording(), 1.1)


def test_relative_paths_round_trip_and_leave_memory_and_commands_alone(train_cuts, tmp_path):
    from lhotse.array import Array

    from weakalign.align.paths import rebase_cut, relative_cut

    cut = train_cuts[0].with_custom("embedding", Array(storage_type="numpy_files",
                                                        storage_path=str(tmp_path / "emb"), storage_key="e.npy",
                                                        shape=[4]))
    cut = cut.attach_tensor("in_memory", np.arange(3), frame_shift=0.01, temporal_dim=0)
    rel = relative_cut(cut, tmp_path)
    assert rel.custom["embedding"].storage_path == "emb"
    assert rel.custom["in_memory"].array.storage_path is None and rel.custom["in_memory"].load().tolist() == [0, 1, 2]
    assert not os.path.isabs(rel.custom["senone"].array.storage_path)
    assert not os.path.isabs(rel.features.storage_path) and not os.path.isabs(rel.recording.sources[0].source)
    back = rebase_cut(rel, tmp_path)
    for path_of in (lambda c: c.custom["senone"].array.storage_path, lambda c: c.features.storage_path,
                    lambda c: c.recording.sources[0].source, lambda c: c.custom["embedding"].storage_path):
        assert os.path.normpath(path_of(back)) == os.path.normpath(path_of(cut))
    assert np.array_equal(back.load_senone(), cut.load_senone())
    with pytest.raises(TypeError, match="MonoCut"):
        relative_cut(cut.pad(duration=cut.duration + 1), tmp_path)
