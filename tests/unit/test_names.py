"""Names in URLs, and hub paths that try to climb out of the downloaded snapshot."""

import pytest

from app.core.errors import MonoscopeError, SaeFormatError
from app.core.names import checked_name, url_name
from app.core.sae import load_sae
from app.core.workspace import sae_name


@pytest.mark.parametrize(
    "spec, name",
    [
        ("saes/res6", "res6"),
        ("hf://google/gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71", "average_l0_71"),
        ("gemma/layer_3/params.npz", "layer_3"),
        ("saes/..", "sae"),
        ("saes/.hidden", "hidden"),
        ("saes/<script>x", "script-x"),
        ("/", "sae"),
    ],
)
def test_names_made_from_paths_are_one_safe_url_segment(spec, name):
    assert sae_name(spec) == name


def test_url_name_bounds_its_length_and_falls_back():
    assert url_name("a" * 300, "x") == "a" * 100
    assert url_name("..", "model") == "model"
    assert url_name("gemma-2-2b", "model") == "gemma-2-2b"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../etc", "", "-x", "x y", "a" * 101, "ü"])
def test_chosen_names_that_are_not_one_url_segment_are_refused(name):
    with pytest.raises(MonoscopeError, match="bad name"):
        checked_name(name)


def test_chosen_names_that_are_fine_pass():
    assert checked_name("res6.v2_final-1") == "res6.v2_final-1"


@pytest.mark.parametrize(
    "spec",
    [
        "hf://owner/repo/../../../../etc",
        "hf://owner/repo/layer/../..",
        "hf://owner/../x",
        "hf://owner/repo//abs",
        "hf://owner/repo/./x",
    ],
)
def test_hub_folders_cannot_climb_out_of_the_snapshot(spec):
    with pytest.raises(SaeFormatError, match="parts are not allowed"):
        load_sae(spec)  # refused before any download is tried
