"""Shared fixtures: the example photos, a throw-away FUSIONRT_HOME, the real detector and
(with torch) small synthetic models built once per session."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASTRONAUT = EXAMPLES / "astronaut.png"
GRACE_HOPPER = EXAMPLES / "grace_hopper.jpg"

# Reduced widths: same I/O contracts, a few MB each, seconds to build.
SYNTH_WIDTHS = {"arcface_w600k_r50": 0.0625, "inswapper_128": 0.03, "simswap_256": 0.0625,
                "crossface_simswap": 1.0, "hyperswap_1a_256": 0.0625}


@pytest.fixture(autouse=True)
def fusionrt_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own model store: nothing is written into the user's home (and the
    test's own ``tmp_path`` stays empty for the test to inspect)."""
    home = tmp_path_factory.mktemp("fusionrt_home")
    monkeypatch.setenv("FUSIONRT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return ASTRONAUT


@pytest.fixture(scope="session")
def grace_path() -> Path:
    return GRACE_HOPPER


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    img = cv2.imread(str(ASTRONAUT))
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def grace() -> np.ndarray:
    img = cv2.imread(str(GRACE_HOPPER))
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def detector(tmp_path_factory):
    """The real RetinaFace detector on ort-cpu (built-in weights), loaded once."""
    from fusionrt.engines.registry import get_engine
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline.host.detect import Detector
    store = ModelStore(tmp_path_factory.mktemp("det_home"))
    engine = get_engine("ort-cpu")(store.resolve("retinaface_mnet025")).load()
    yield Detector(engine)
    engine.close()


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """A store holding tiny synthetic arcface/inswapper/simswap (random weights), once per
    session. Skips without torch."""
    return synthetic_models(tmp_path_factory.mktemp("synthetic_home"), SYNTH_WIDTHS)


def synthetic_models(home: Path, widths: dict[str, float]) -> Path:
    """A store at ``home`` holding each named model synthesised at its width (seed 0, random
    weights). Skips without torch."""
    pytest.importorskip("torch")
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.store import ModelStore
    store = ModelStore(home)
    for name, width in widths.items():
        synthesize(name, store.synthetic_path(name), seed=0, width=width)
    return home


@pytest.fixture
def synthetic_home(synthetic_store, monkeypatch) -> Path:
    """FUSIONRT_HOME pointing at the session's synthetic store."""
    monkeypatch.setenv("FUSIONRT_HOME", str(synthetic_store))
    return synthetic_store
