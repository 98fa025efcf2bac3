import os

# This world has no model hub: fail fast instead of retrying network requests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from app.core.model import LoadedModel, load_model
from tests.helpers import build_model, random_sae


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture(scope="session")
def gpt2(gpt2_dir) -> LoadedModel:
    return load_model(gpt2_dir, device="cpu")


@pytest.fixture(scope="session")
def gpt2_sae(gpt2):
    """A standard SAE attached at blocks.1.hook_resid_post of the tiny GPT-2."""
    return gpt2.attach(random_sae(hook_name="blocks.1.hook_resid_post"))
