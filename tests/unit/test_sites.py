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
