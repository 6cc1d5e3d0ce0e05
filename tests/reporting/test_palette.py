"""The kit's colour-vision-safe palette: colours shown together stay apart for the commonest colour-vision
deficiencies, no red with green, and the overlays and figures take their colours from it."""
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from helpers.evaluation import inference
from helpers.reporting import figures

ROOT = Path(__file__).resolve().parents[2]
# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB: what a dichromat sees.
SIMULATIONS = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}
APART = 20.0  # CIELAB ΔE: below about 10 two flat colours are hard to tell apart; 20 leaves a margin
P = figures.PALETTE
SHOWN_TOGETHER = {  # the colours that share one picture
    "outlines": [P["truth"], P["prediction"]],
    "errors": [P["hit"], P["false_alarm"], P["missed"]],
    "attention": [P["truth"], P["query"]],
    "series": list(figures.SERIES),
    "diagram": list(figures.DIAGRAM.values()),
}


def _rgb01(colour) -> np.ndarray:
    """(r, g, b) in 0-255 or a matplotlib colour → floats in [0, 1]."""
    return np.asarray(colour, float) / 255 if isinstance(colour, tuple) else np.asarray(to_rgb(colour))


def _lab(rgb01: np.ndarray, simulation: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour as seen under ``simulation``."""
    linear = np.where(rgb01 <= 0.04045, rgb01 / 12.92, ((rgb01 + 0.055) / 1.055) ** 2.4)
    linear = np.clip(SIMULATIONS[simulation] @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def distance(a, b, simulation: str) -> float:
    """CIELAB ΔE (1976) between two colours as seen under ``simulation``."""
    return float(np.linalg.norm(_lab(_rgb01(a), simulation) - _lab(_rgb01(b), simulation)))


def _hue_family(colour) -> str:
    """``red``, ``green`` or ``other``: saturated colours by hue (HSV), greys and pale colours are ``other``."""
    r, g, b = _rgb01(colour)
    high, low = max(r, g, b), min(r, g, b)
    if high == 0 or (high - low) / high < 0.5:
        return "other"
    hue = {r: (g - b) / (high - low), g: 2 + (b - r) / (high - low), b: 4 + (r - g) / (high - low)}[high] * 60 % 360
    return "red" if hue < 20 or hue > 340 else "green" if 80 <= hue <= 160 else "other"


@pytest.mark.parametrize("group", SHOWN_TOGETHER)
@pytest.mark.parametrize("simulation", SIMULATIONS)
def test_colours_shown_together_stay_apart(group, simulation):
    close = [(a, b, round(distance(a, b, simulation), 1)) for a, b in itertools.combinations(SHOWN_TOGETHER[group], 2)
             if distance(a, b, simulation) < APART]
    assert not close, f"{group} under {simulation}: confusable pairs {close}"


def test_the_check_catches_the_old_red_green_overlay():
    assert distance((0, 200, 0), (230, 0, 0), "deuteranopia") < APART < distance((0, 200, 0), (230, 0, 0), "normal")
    assert distance((0, 90, 255), (255, 0, 255), "protanopia") < APART  # the old blue 'missed' beside magenta


def test_no_red_with_green_anywhere_in_the_palette():
    colours = [*P.values(), *figures.SERIES, *figures.DIAGRAM.values()]
    families = {_hue_family(c) for c in colours}
    assert not {"red", "green"} <= families, families
    assert _hue_family((0, 255, 0)) == "green" and _hue_family((255, 0, 0)) == "red"  # the check itself works


def test_overlays_draw_with_the_palette():
    image, mask, pred = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    mask[1:4, 1:4], pred[4:7, 4:7] = True, True
    drawn = inference.overlay(image, mask, pred=pred)
    assert tuple(drawn[1, 1]) == P["truth"] and tuple(drawn[6, 6]) == P["prediction"]
    tinted = figures.error_overlay(image, mask | pred, pred, alpha=1.0)
    assert tuple(tinted[5, 5]) == P["hit"] and tuple(tinted[1, 1]) == P["missed"]
    assert tuple(figures.error_overlay(image, mask, pred, alpha=1.0)[5, 5]) == P["false_alarm"]


COLOUR_LITERAL = re.compile(r"""["'](?:tab:)?(?:red|green|lime|magenta)["']|#0f0\b|#00ff00|#ff0000|#ff00ff|"""
                            r"""\((?:255, 0, 0|0, 255, 0|255, 0, 255|0, 200, 0|230, 0, 0)\)""", re.IGNORECASE)
# predict.py's overlay colour is its owner's to change to inference.PALETTE["prediction"] (issue 21)
PENDING = {"helpers/evaluation/predict.py"}


def test_no_colour_is_chosen_outside_the_palette_in_helpers():
    found = [f"{path.relative_to(ROOT)}: {match.group()}" for path in sorted((ROOT / "helpers").rglob("*.py"))
             if str(path.relative_to(ROOT)) not in PENDING for match in COLOUR_LITERAL.finditer(path.read_text())]
    assert not found, found


@pytest.mark.parametrize("name", ["01_data_prep.ipynb", "04_results.ipynb"])
def test_notebook_text_names_the_palettes_colours(name):
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    text = "\n".join("".join(cell["source"]) for cell in cells)
    assert not re.findall(r"\b(?:green|magenta|red)\b", text, re.IGNORECASE)
    assert not COLOUR_LITERAL.findall(text)
