"""The mesoscopic engine's shape (issue 19): short functions, no upward imports, named modules."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import topograph

SRC = Path(topograph.__file__).parent
MAX_FUNCTION_LINES = 100


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (f"{path.relative_to(SRC)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_meso_function_over_100_lines():
    files = sorted((SRC / "meso").rglob("*.py"))
    assert len(files) > 20  # the package is where this test expects it
    long = [(name, n) for f in files for name, n in _functions(f) if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_length_check_sees_long_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 5))
    f = tmp_path / "long.py"
    f.write_text(f"def f():\n{body}\n", encoding="utf-8")
    tree = ast.parse(f.read_text())
    fn = tree.body[0]
    assert fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES


def test_analysis_and_geometry_do_not_import_the_meso_engine():
    for pkg in ("analysis", "geometry"):
        for f in sorted((SRC / pkg).rglob("*.py")):
            upward = sorted(m for m in _imports(f) if m.startswith("topograph.meso"))
            assert not upward, f"{f.relative_to(SRC)} imports {upward}"


def test_no_module_named_engine_in_meso():
    assert not list((SRC / "meso").rglob("engine.py"))


def test_types_do_not_import_io():
    """``topograph.types`` is the bottom layer: io reads into it, never the reverse (the old
    ``SemImage.sharpness`` closed a types <-> io cycle)."""
    upward = sorted(m for m in _imports(SRC / "types.py") if m.startswith("topograph."))
    assert not upward, upward


def test_both_height_models_implement_the_protocol():
    from topograph.meso.models.cnn import HeightCNN
    from topograph.meso.models.heights import HeightMaps, HeightModel

    members = [m for m in vars(HeightModel) if not m.startswith("_")] + ["__call__"]
    assert len(members) >= 10
    pixels = np.random.default_rng(0).integers(0, 255, (2, 24, 32, 3), dtype=np.uint8)
    for model in (HeightMaps(2, (32, 24), 2), HeightCNN(2, (32, 24), (4, 4), downsample=2)):
        model.prepare(pixels)
        missing = [m for m in members if not hasattr(model, m)]
        assert not missing, f"{type(model).__name__} lacks {missing}"
        assert tuple(model.maps.shape[-2:]) == model.shape


def test_the_engine_does_not_branch_on_model_classes_or_mode_strings():
    """Behaviour follows the HeightModel protocol and the Projection strategy (issue 19)."""
    for f in sorted((SRC / "meso").rglob("*.py")):
        text = f.read_text(encoding="utf-8")
        assert "isinstance(model.heights" not in text and "isinstance(heights, HeightCNN)" not in text, f
        assert 'projection == "' not in text, f


def test_meso_configs_are_frozen_and_replaced_by_dotted_keys():
    import dataclasses

    import pytest

    from topograph.meso.config import MesoConfig, replace_settings

    cfg = MesoConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.heights.model = "tv"  # type: ignore[misc]
    new = replace_settings(cfg, {"heights.model": "tv", "heights.flow.passes": 3, "threads": 1})
    assert (new.heights.model, new.heights.flow.passes, new.threads) == ("tv", 3, 1)
    assert cfg.heights.model != "tv" and cfg.threads == 0  # the original is untouched
    assert dataclasses.replace(new, heights=cfg.heights, threads=0) == cfg  # nothing else changed
    with pytest.raises(TypeError):
        replace_settings(cfg, {"heights.no_such_key": 1})


def test_the_design_page_indexes_every_meso_module():
    """docs/design-meso.md matches the code: its module index names exactly the modules of meso/."""
    import re

    page = (Path(__file__).resolve().parents[1] / "docs" / "design-meso.md").read_text(encoding="utf-8")
    index = page.split("## Module index", 1)[1]
    named = set(re.findall(r"^\| `([a-z_.]+)` \|", index, flags=re.M))
    on_disk = {
        ".".join(f.relative_to(SRC / "meso").with_suffix("").parts)
        for f in (SRC / "meso").rglob("*.py")
        if f.name != "__init__.py"
    }
    assert named == on_disk, f"only on the page: {sorted(named - on_disk)}; only on disk: {sorted(on_disk - named)}"
