import pytest

from app.core.errors import SiteError
from app.core.sites import Site, parse_site


@pytest.mark.parametrize(
    "name,site",
    [
        ("blocks.0.hook_resid_pre", Site(0, "resid_pre")),
        ("blocks.12.hook_resid_post", Site(12, "resid_post")),
        ("blocks.3.hook_mlp_out", Site(3, "mlp_out")),
        ("blocks.3.hook_attn_out", Site(3, "attn_out")),
        ("layers.6", Site(6, "resid_post")),
        ("layers.6.mlp", Site(6, "mlp_out")),
        ("blocks.4.hook_mlp_in", Site(4, "mlp_in")),
        ("blocks.4.ln2.hook_normalized", Site(4, "mlp_in")),
        ("blocks.4.mlp.hook_in", Site(4, "mlp_in")),
    ],
)
def test_names_parse_to_canonical_sites(name, site):
    assert parse_site(name) == site
    assert parse_site(site.name) == site


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "blocks.x.hook_resid_post",
        "blocks.1.hook_z",
        "model.layers.3",
        "layers.-1",
        "blocks.1.hook_resid_post.extra",
    ],
)
def test_other_names_are_rejected_with_the_supported_forms(bad):
    with pytest.raises(SiteError, match="supported forms"):
        parse_site(bad)


def test_the_mlp_input_comes_between_attention_and_mlp_output():
    order = sorted(Site(2, kind) for kind in ("resid_post", "mlp_out", "mlp_in", "attn_out"))
    assert sorted(order, key=lambda site: site.depth) == [
        Site(2, "attn_out"),
        Site(2, "mlp_in"),
        Site(2, "mlp_out"),
        Site(2, "resid_post"),
    ]
    assert Site(1, "resid_post").depth < Site(2, "mlp_in").depth
