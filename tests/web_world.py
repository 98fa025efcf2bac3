"""A small stored world for web tests, with hostile token and label text.

sae_id = build_world(session)                  # model "tiny", SAE "res1", 6 features
build_demo_rows(session, demo_workspace)       # "monoscope-demo/res1" rows for live text
with writer_client(engine) as client: ...      # build_world + user "ada" with a key; sign_in()
"""

import json
import math
from contextlib import contextmanager

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.db import accounts
from app.db import store as db
from app.db.engine import session_scope
from app.db.labels import refresh_sae
from app.db.models import Explanation, Feature
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
LOGITS = {"counts": [1, 3, 8, 20, 40, 20, 6, 2], "low": -1.2, "high": 1.5}  # vocabulary of 100
VOCAB = ["<|endoftext|>", "Golden", " Gate", SCRIPT, IMG, " Bridge", "\n", " the", " fog", "&amp;"]
HOSTILE_LABEL = "<b>bold</b> & <i>Golden Gate</i>"
CONTEXT = 12
D_SAE = 6
DEAD = 3


def _contexts(rng: np.random.Generator, n: int) -> np.ndarray:
    ids = rng.integers(1, len(VOCAB), size=(n, CONTEXT)).astype(np.int32)
    ids[:, 0] = 0  # BOS
    ids[:, 5] = 3  # every context carries both hostile tokens
    ids[:, 6] = 4
    return ids


EDGES = [round(-3 + 0.1 * i, 2) for i in range(61)]  # log10 activation bins of a harvest


def counts_up_to(max_act: float) -> list[int]:
    """An activation histogram whose top bin holds `max_act`."""
    top = min(int((math.log10(max_act) + 3) * 10), len(EDGES) - 2)
    return [9 if top - 8 <= i <= top else 0 for i in range(len(EDGES) - 1)]


def build_world(session: Session, name: str = "res1") -> int:
    """Model 'tiny' and SAE `name`: feature 0 has a hostile label, three labels and examples on
    hostile tokens; 1 and 2 are labelled; 3 is dead; 4 and 5 are alive without labels."""
    rng = np.random.default_rng(0)
    model = db.upsert_model(session, db.ModelInfo("tiny", "tests/tiny", "gpt2", 2, 16, 10), VOCAB)
    metrics = {
        "l0": 12.5,
        "variance_explained": 0.81,
        "ce_loss_recovered": 0.93,
        "dead_fraction": 1 / 6,
    }
    harvest = {"tokens": 4096, "histogram_log10_edges": EDGES, "config": {"n_intervals": 5}}
    sae = db.create_sae(
        session,
        model,
        db.SaeInfo(
            name, "saes/" + name, "blocks.1.hook_resid_post", "topk", 16, D_SAE, metrics, harvest
        ),
    )
    counts = [0] * 60  # feature 0 alone has a logit histogram, as an older harvest left none
    counts[30:40] = [5, 9, 14, 20, 25, 18, 10, 6, 3, 1]
    feature_ids = db.insert_features(
        session,
        sae.id,
        {
            "index": list(range(D_SAE)),
            "density": [0.02, 0.005, 0.3, 0.0, 0.0004, 0.01],
            "max_act": [5.0, 2.0, 1.0, 0.0, 3.0, 4.0],
            "mean_act": [1.5, 0.7, 0.4, 0.0, 1.0, 1.1],
            "histogram": [{"counts": counts, "logits": LOGITS}]
            + [{"counts": counts}] * (D_SAE - 1),
            "top_logits": [[[3, SCRIPT, 1.5], [5, " Bridge", 0.9]]] * D_SAE,
            "bottom_logits": [[[4, IMG, -1.2]]] * D_SAE,
            "neighbours": [[[1, 0.62], [4, 0.35]]] + [[]] * (D_SAE - 1),
        },
    )
    contexts = _contexts(rng, 8)
    context_ids = db.insert_contexts(session, model.id, "fp", np.arange(8), contexts)
    acts = np.zeros((8, CONTEXT), np.float32)
    acts[:, 5] = np.linspace(5.0, 1.0, 8)  # peaks on the <script> token
    acts[:, 6] = 0.5
    db.insert_examples(
        session,
        feature_ids=np.array([feature_ids[0]] * 8),
        context_ids=np.array([context_ids[r] for r in range(8)]),
        kinds=["top"] * 5 + ["quantile"] * 3,
        ranks=np.array([0, 1, 2, 3, 4, 0, 1, 2]),
        intervals=np.array([-1] * 5 + [1, 1, 0]),
        max_acts=acts.max(axis=1),
        activations=acts,
    )
    labels = [
        (0, HOSTILE_LABEL, {"keyword": {"value": 0.8}}),
        (0, "an older, weaker label", {"keyword": {"value": 0.2}}),
        (0, "", None),  # a failure is shown as one, never as the label
        (1, "Golden Gate Bridge in the fog", {"keyword": {"value": 0.6}}),
        (2, "common words", {"detection": {"value": 0.55}, "keyword": {"value": 0.9}}),
    ]
    for index, text, scores in labels:
        session.add(
            Explanation(
                feature_id=int(feature_ids[index]),
                text=text,
                method="offline",
                scores=scores or {},
                status="ok" if text else "failed",
                error=None if text else "the explainer returned nothing",
            )
        )
    session.flush()
    refresh_sae(session, sae.id)
    return sae.id


def build_demo_rows(
    session: Session, workspace, labels: dict | None = None, sae: str = "res1"
) -> int:
    """Stored rows for the demo model and SAE `sae` (no examples), so pages can link live text
    to features without a harvest. `labels` gives chosen features a label, a max activation and
    an activation histogram up to it."""
    tokenizer = workspace.model.tokenizer
    vocab = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    name, loaded = sae, workspace.saes[sae]
    d_sae = loaded.d_sae
    model = db.upsert_model(
        session, db.ModelInfo("monoscope-demo", "demo", "gpt2", 4, 256, len(vocab)), vocab
    )
    sae = db.create_sae(
        session,
        model,
        db.SaeInfo(
            name, "demo", loaded.hook_name, "topk", 256, d_sae, {}, {"histogram_log10_edges": EDGES}
        ),
    )
    db.insert_features(
        session,
        sae.id,
        {
            "index": list(range(d_sae)),
            "density": [0.01] * d_sae,
            "max_act": [4.0] * d_sae,
            "mean_act": [1.0] * d_sae,
        },
    )
    for index, (text, max_act) in {7: ("demo feature seven", 4.0), **(labels or {})}.items():
        feature = session.query(Feature).filter_by(sae_id=sae.id, index=index).one()
        feature.max_act = max_act
        feature.histogram = {"counts": counts_up_to(max_act)}
        session.add(Explanation(feature_id=feature.id, text=text, method="offline"))
    session.flush()
    refresh_sae(session, sae.id)
    return sae.id


def golden_gate_feature(workspace) -> tuple[int, float]:
    """The demo SAE's feature that fires hardest on ' Gate' in the bridge's name, found by running
    the model (never hard-coded), and that activation, to store as its max."""
    from app.core.inspect import inspect

    found = inspect(workspace.model, workspace.saes, "We walked across the Golden Gate Bridge.")
    top = found.saes["res1"].per_token[found.tokens.index(" Gate")][0]
    return top.index, top.value


def build_demo_saes(session: Session, workspace) -> int:
    """Rows for both demo SAEs with the Golden Gate feature labelled, as pages that read every
    loaded SAE (contrast, classifiers, AutoSteer) need; the bridge feature's index."""
    bridge, max_act = golden_gate_feature(workspace)
    build_demo_rows(session, workspace, {bridge: ("Golden Gate Bridge", max_act)})
    build_demo_rows(session, workspace, sae="res3")
    return bridge


PASSWORD = "correct horse battery"  # the test account "ada"


def form_token(page: str) -> str:
    """The CSRF token a page's forms carry."""
    return parsed(page).select_one('input[name="csrf_token"]')["value"]


def header_token(page: str) -> str:
    """The CSRF token htmx sends with a signed-in page's requests (its body's hx-headers)."""
    return json.loads(parsed(page).body["hx-headers"])["X-CSRF-Token"]


def sign_in(client, password: str = PASSWORD, next: str = "/"):
    """Sign "ada" in through the real form (the login page first, for its CSRF token)."""
    token = form_token(client.get("/login").text)
    return client.post(
        "/login",
        data={"name": "ada", "password": password, "next": next, "csrf_token": token},
        follow_redirects=False,
    )


@contextmanager
def writer_client(engine):
    """A client on build_world's database where "ada" may write; `client.key` is her API key's
    Authorization header."""
    with session_scope(engine) as session:
        build_world(session)
        _, secret = accounts.create_key(session, accounts.add_user(session, "ada", PASSWORD), "t")
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url))) as client:
        client.key = {"Authorization": f"Bearer {secret}"}
        yield client
