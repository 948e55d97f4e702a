"""The engine option tables: CLI flags and batch options generated from the configuration dataclasses."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from typer.main import get_command

from topograph.batch.engines import get_engine
from topograph.cli import app, run
from topograph.config import RENAMED_KEYS, apply_overrides, from_yaml
from topograph.errors import TopographError
from topograph.options import ENGINES, MESO, SEM, parse_sets, scalar_type
from topograph.sem.config import MatchingConfig, SemConfig


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_table_key_is_a_config_field_and_a_cli_option(engine: str) -> None:
    table = ENGINES[engine]
    command = get_command(app).commands[engine]
    params = {o: p for p in command.params for o in p.opts}
    signature = inspect.signature(next(c.callback for c in app.registered_commands if c.name == engine))
    defaults = table.config_class()()
    for opt in table.options:
        tp = table.field_type(opt.key)  # raises KeyError for a key the configuration lacks
        assert opt.flag in params, f"{opt.flag} is not an option of topograph {engine}"
        if opt.switch is None:
            assert signature.parameters[opt.name].annotation == (scalar_type(tp) | None), opt.flag
        # the table's value goes where the key says
        node = defaults
        for part in opt.key.split("."):
            node = getattr(node, part)
    assert "--set" in params and "--config" in params
    assert len({o.flag for o in table.options}) == len(table.options)


def test_overrides_map_flags_to_keys_with_checks() -> None:
    assert SEM.overrides({"matcher": "dense", "sparse_only": True, "flip_relief": False}) == {
        "matching.matcher": "dense",
        "dense.enabled": False,
    }
    assert MESO.overrides({"scale_points": "10,20,400,20", "regularizer": "TV"}) == {
        "scale.scale_points": [10.0, 20.0, 400.0, 20.0],
        "heights.model": "tv",
    }
    with pytest.raises(TopographError, match="--focal-mm must be a positive number"):
        MESO.overrides({"focal_mm": -4.0})
    with pytest.raises(TopographError, match="option 'focal_mm'"):
        MESO.overrides({"focal_mm": "zero"}, label=lambda o: f"option '{o.name}'")
    sets = parse_sets(["dense.enabled=false", "matching.sift.ratio=0.7", "dense.closure=mirrored"])
    cfg = apply_overrides(SemConfig(), sets)  # text typed by each field
    assert cfg.dense.enabled is False and cfg.matching.sift.ratio == 0.7 and cfg.dense.closure == "mirrored"
    from topograph.meso.config import MesoConfig

    # a word YAML would read as a boolean stays the word the field expects
    assert apply_overrides(MesoConfig(), parse_sets(["checks.gates=off"])).checks.gates == "off"
    with pytest.raises(TopographError, match="KEY=VALUE"):
        parse_sets(["dense.enabled"])


def test_sem_command_takes_set(tmp_path: Path) -> None:
    """`--set` reaches the SEM configuration (an unknown key and a bad value fail before any work)."""
    series = tmp_path / "series"
    series.mkdir()
    unknown = run(["sem", str(series), "-o", str(tmp_path / "o"), "--set", "dense.no_such_key=1"])
    assert unknown == 3
    bad = run(["sem", str(series), "-o", str(tmp_path / "o"), "--set", "matching.sift.ratio=high"])
    assert bad == 3
    assert not (tmp_path / "o").exists()


def test_batch_takes_every_table_option(tmp_path: Path) -> None:
    sem = get_engine("sem")
    options = sem.check_options({"matcher": "dense", "sparse_only": True, "tilts_deg": "0,5,10"}, "d1", tmp_path)
    cfg = sem.config(options)
    assert cfg.matching.matcher == "dense" and cfg.dense.enabled is False and options["tilts_deg"] == [0.0, 5.0, 10.0]
    with pytest.raises(TopographError, match="d1: option 'colour' is not known"):
        sem.check_options({"colour": "red"}, "d1", tmp_path)
    pytest.importorskip("torch")
    meso = get_engine("meso")
    cfg = meso.config(meso.check_options({"focal_mm": "4.2", "regularizer": "tv"}, "d2", tmp_path))
    assert cfg.scale.focal_mm == 4.2 and cfg.heights.model == "tv" and cfg.threads == 1  # a batch's default
    assert meso.config({"set": {"threads": 3}}).threads == 3
    with pytest.raises(TopographError, match="d2: option 'magnification' must be a positive number"):
        meso.check_options({"magnification": 0}, "d2", tmp_path)


def test_matcher_settings_are_nested_per_matcher() -> None:
    """`match_series` takes the matcher's own section; a plugin matcher takes `matching.options`."""
    cfg = SemConfig().matching
    assert cfg.matcher_options()["ratio"] == 0.8 and cfg.matcher_options()["max_image_side"] == 800
    roma = dataclasses.replace(cfg, matcher="roma", roma=dataclasses.replace(cfg.roma, weights="w.pth"))
    assert roma.matcher_options()["weights"] == "w.pth" and "ratio" not in roma.matcher_options()
    plugin = MatchingConfig(matcher="my_plugin", options={"threshold": 0.5})
    assert plugin.matcher_options() == {"threshold": 0.5}
    assert apply_overrides(SemConfig(), {"matching.sift.ratio": "0.7"}).matching.sift.ratio == 0.7


def test_config_file_values_are_checked_as_their_flags() -> None:
    from topograph.meso.config import MesoConfig

    cfg = MesoConfig()
    MESO.check_values(cfg)  # the defaults pass
    bad = dataclasses.replace(cfg, scale=dataclasses.replace(cfg.scale, focal_mm=-1.0))
    with pytest.raises(TopographError, match=r"--focal-mm \(scale.focal_mm\) must be a positive number"):
        MESO.check_values(bad)
    with pytest.raises(TopographError, match=r"--threads \(threads\) must be >= 0"):
        MESO.check_values(dataclasses.replace(cfg, threads=-2))
    with pytest.raises(TopographError, match="matching.options' must be a mapping"):
        apply_overrides(SemConfig(), {"matching.options": "fast"})


@pytest.mark.parametrize("old, new", sorted(RENAMED_KEYS.items()))
def test_a_renamed_key_names_its_new_spelling(old: str, new: str) -> None:
    cfg = SemConfig()
    value = _current(cfg, new)
    assert apply_overrides(cfg, {new: value if value is not None else "w.pt"}) is not None  # the new key exists
    with pytest.raises(TopographError, match=f"renamed to '{new}'"):
        apply_overrides(cfg, {old: 1})
    section, leaf = old.split(".")
    with pytest.raises(TopographError, match=f"renamed to '{new}'"):
        from_yaml(SemConfig, f"{section}:\n  {leaf}: 1\n")


def _current(cfg: SemConfig, dotted: str) -> object:
    node: object = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
