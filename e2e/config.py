"""E2E configs: ``conf/<name>.yaml`` merged over ``conf/defaults.yaml``, with per-corpus overrides.

Merge order (later wins): ``defaults.yaml``, ``<corpus>/defaults.yaml``, ``<name>.yaml``,
``<corpus>/<name>.yaml``, then explicit ``overrides``. ``name`` may also be a path to a
YAML file (e.g. one a sweep wrote); its corpus override is then looked up by its stem.

>>> cfg = load_config("aux_ls0.5_l3")
>>> cfg["aux"], cfg["aux_layer"], cfg["aux_smoothing"], cfg["enc_layers"]
('smoothed_ce', 3, 0.5, 6)
>>> run_name("baseline", None), run_name("baseline", 3)
('baseline', 'baseline_seed3')
>>> reads_alignments(load_config("emnet_ctc")), reads_alignments(load_config("emnet_ctc_aux"))
(False, True)
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIGS = ("baseline", "aux_ls0.5_l3", "aux_onehot_l3", "aux_senonectc_l3", "auxctc_l3", "ctc_only")
EMNET_CONFIGS = ("emnet_ctc_only", "emnet_ctc", "emnet_hybrid", "emnet_ctc_aux")
SENONE_AUX_KINDS = ("smoothed_ce", "onehot_ce", "senone_ctc")   # the aux terms that read the alignments


def reads_alignments(config: dict) -> bool:
    """Whether a system's loss reads the senone alignments of its cuts. One that does not (the
    baseline, BPE inter-CTC, EM-Network without an aux term) trains on the same bytes whichever
    alignment set the cuts carry, so its runs are comparable across alignment sets."""
    return config.get("aux") in SENONE_AUX_KINDS


def _read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping, got {type(data).__name__}")
    return data


def config_name(name_or_path: str) -> str:
    p = Path(name_or_path)
    return p.stem if p.suffix in (".yaml", ".yml") else name_or_path


def load_config(name_or_path: str, corpus: str | None = None, overrides: dict | None = None,
                conf_dir: str | Path | None = None) -> dict:
    conf_dir = Path(conf_dir) if conf_dir else CONF_DIR
    p = Path(name_or_path)
    main = p if p.suffix in (".yaml", ".yml") else conf_dir / f"{name_or_path}.yaml"
    if not main.exists():
        known = sorted(x.stem for x in conf_dir.glob("*.yaml") if x.stem != "defaults")
        raise FileNotFoundError(f"config {name_or_path!r} not found ({main}); known: {', '.join(known)}")
    name = config_name(name_or_path)
    layers = [conf_dir / "defaults.yaml"]
    if corpus:
        layers.append(conf_dir / corpus / "defaults.yaml")
    layers.append(main)
    if corpus:
        layers.append(conf_dir / corpus / f"{name}.yaml")
    config: dict = {}
    for layer in layers:
        if layer.exists():
            config.update(_read_yaml(layer))
    config.update(overrides or {})
    config["name"] = name
    return config


def parse_overrides(items) -> dict:
    """``["aux_smoothing=0.3", "epochs=2"]`` -> ``{"aux_smoothing": 0.3, "epochs": 2}`` (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_name(config: str, seed: int | None) -> str:
    """``<config>`` for the default seed, ``<config>_seed<n>`` otherwise."""
    name = config_name(config)
    return name if seed is None else f"{name}_seed{seed}"
