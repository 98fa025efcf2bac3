"""Harvest into SQLite and PostgreSQL: exact against brute force, resumable, all-or-nothing."""

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.errors import MonoscopeError
from app.core.sae import save_saelens
from app.db import store as db
from app.db.engine import session_scope
from app.db.queries import feature_detail
from app.pipeline import harvest as harvest_module
from app.pipeline.config import IngestConfig
from app.pipeline.harvest import HarvestConfig, HarvestJob
from app.pipeline.ingest import IngestJob, TokenStore
from app.pipeline.sharding import join_cluster
from tests.helpers import CORPUS, database_snapshot, random_sae, random_transcoder

CONTEXT = 16
TOKENS = 40 * CONTEXT


@pytest.fixture(scope="module")
def corpus(gpt2, tmp_path_factory) -> TokenStore:
    folder = tmp_path_factory.mktemp("harvest")
    (folder / "corpus.txt").write_text("\n\n".join(CORPUS))
    return IngestJob(
        IngestConfig(
            str(folder / "corpus.txt"), folder / "store", context_size=CONTEXT, progress=False
        ),
        gpt2.tokenizer,
    ).run()


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sae") / "res1"
    save_saelens(random_sae(d_sae=64, hook_name="blocks.1.hook_resid_post", seed=3), folder)
    return folder


def _config(corpus, sae_dir, tmp_path, **changes) -> HarvestConfig:
    config = HarvestConfig(
        model="tiny-gpt2",
        sae=str(sae_dir),
        corpus=str(corpus.path),
        tokens=TOKENS,
        batch_size=4,
        n_top=5,
        n_intervals=3,
        per_interval=2,
        n_logits=4,
        n_neighbours=3,
        eval_contexts=8,
        checkpoint_every=2,
        work_dir=tmp_path / "work",
        progress=False,
        device="cpu",
    )
    return replace(config, **changes)


def _run(engine, gpt2, config):
    return HarvestJob(config, engine, model=gpt2).run()


def _brute_force(gpt2, sae_dir, corpus):
    from app.core.sae import load_sae

    sae = gpt2.attach(load_sae(str(sae_dir)))
    ids = torch.from_numpy(np.asarray(corpus.ids[: TOKENS // CONTEXT], np.int64))
    x = gpt2.capture(ids, [sae.hook_name])[sae.hook_name]
    counted = torch.from_numpy(corpus.counted_mask(0, len(ids)))
    return sae.encode(x) * counted[..., None], counted  # BOS and left context count nowhere


def test_harvest_matches_brute_force(engine, gpt2, corpus, sae_dir, tmp_path):
    result = _run(engine, gpt2, _config(corpus, sae_dir, tmp_path))
    acts, counted = _brute_force(gpt2, sae_dir, corpus)
    assert (corpus.counted_from[: len(acts)] > 1).any()  # left context is re-read: tested
    flat = acts[counted]
    assert result.tokens == flat.shape[0]
    with session_scope(engine) as session:
        for index in range(64):
            detail = feature_detail(session, gpt2.name, "res1", index)
            feature = detail.feature
            column = flat[:, index]
            assert feature.density == pytest.approx(float((column > 0).float().mean()))
            assert feature.max_act == pytest.approx(float(column.max()), rel=1e-5)
            per_context = acts[:, :, index].amax(dim=1)
            top = detail.of_kind("top")
            expected_rows = sorted(
                (i for i in range(len(per_context)) if per_context[i] > 0),
                key=lambda i: (-float(per_context[i]), i),
            )[:5]
            assert [e.context_row for e in top] == expected_rows
            for example in detail.examples:
                row = example.context_row
                assert np.array_equal(example.token_ids, corpus.ids[row])
                truth = acts[row, :, index].numpy()
                np.testing.assert_allclose(example.activations, truth, rtol=1e-3, atol=1e-3)
                assert example.max_act == pytest.approx(float(truth.max()), rel=1e-5)
            quantiles = detail.of_kind("quantile")
            assert {e.context_row for e in quantiles}.isdisjoint(expected_rows)
            assert all(e.max_act > 0 for e in detail.examples)  # never an all-zero example
            assert len(feature.top_logits) == 4 and len(feature.neighbours) == 3
        sae_row = detail.sae
        l0 = float((flat > 0).sum(1).float().mean())
        assert sae_row.metrics["l0"] == pytest.approx(l0, abs=1e-4)
        assert sae_row.metrics["eval_tokens"] > 0 and "variance_explained" in sae_row.metrics


def test_logit_effects_use_the_final_norm_gain(engine, gpt2, corpus, sae_dir, tmp_path):
    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path))
    from app.core.sae import load_sae

    sae = load_sae(str(sae_dir))
    W_U = gpt2.unembedding().float() * gpt2.final_norm_scale()
    effects = sae.W_dec[7].float() @ W_U.T
    with session_scope(engine) as session:
        feature = feature_detail(session, gpt2.name, "res1", 7).feature
    assert [t[0] for t in feature.top_logits] == effects.topk(4).indices.tolist()
    assert [t[0] for t in feature.bottom_logits] == effects.topk(4, largest=False).indices.tolist()
    vocab = gpt2.tokenizer.decode([feature.top_logits[0][0]])
    assert feature.top_logits[0][1] == vocab
    spread = feature.histogram["logits"]
    assert sum(spread["counts"]) == len(effects)  # every token of the vocabulary, once
    assert spread["low"] == pytest.approx(float(effects.min()), abs=1e-4)
    assert spread["high"] == pytest.approx(float(effects.max()), abs=1e-4)


def test_a_killed_harvest_resumes_to_the_same_database(
    engine, gpt2, corpus, sae_dir, tmp_path, monkeypatch
):
    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path / "a"))
    uninterrupted = database_snapshot(engine)

    real_save = harvest_module.save_checkpoint
    calls = []

    def crash_on_third(path, step, **parts):
        calls.append(step)
        if len(calls) == 3:  # the third shard is on disk, its checkpoint is not
            raise KeyboardInterrupt
        real_save(path, step, **parts)

    config = _config(corpus, sae_dir, tmp_path / "b", replace=True)
    monkeypatch.setattr(harvest_module, "save_checkpoint", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _run(engine, gpt2, config)
    monkeypatch.setattr(harvest_module, "save_checkpoint", real_save)
    assert database_snapshot(engine) == uninterrupted  # the crash wrote nothing
    _run(engine, gpt2, config)
    resumed = database_snapshot(engine)
    assert resumed == uninterrupted


def _killed_mid_write(real, nth: int, file_arg: int):
    """`real` (np.savez or torch.save, whose file is argument `file_arg`) that, at its nth call,
    leaves half a file and dies."""
    calls = []

    def write(*args, **kwargs):
        calls.append(1)
        real(*args, **kwargs)
        if len(calls) == nth:
            file = args[file_arg]
            with open(file if isinstance(file, (str, Path)) else file.name, "r+b") as f:
                f.truncate(f.seek(0, 2) // 2)
            raise KeyboardInterrupt

    return write


@pytest.mark.parametrize("instant", ["mid-shard", "mid-checkpoint", "shard-unrecorded", "write"])
def test_a_harvest_killed_at_any_instant_resumes_to_the_same_database(
    engine, gpt2, corpus, sae_dir, tmp_path, monkeypatch, instant
):
    import app.core.checkpoint as checkpoint_module

    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path / "a"))
    uninterrupted = database_snapshot(engine)
    config = _config(corpus, sae_dir, tmp_path / "b", replace=True)
    with monkeypatch.context() as patched:
        if instant == "mid-shard":
            patched.setattr(np, "savez", _killed_mid_write(np.savez, 2, 0))
        elif instant == "mid-checkpoint":
            patched.setattr(checkpoint_module.torch, "save", _killed_mid_write(torch.save, 2, 1))
        elif instant == "shard-unrecorded":  # the shard is whole, its checkpoint never came
            real = harvest_module.save_checkpoint
            calls = []

            def dies(*args, **kwargs):
                calls.append(1)
                if len(calls) == 2:
                    raise KeyboardInterrupt
                real(*args, **kwargs)

            patched.setattr(harvest_module, "save_checkpoint", dies)
        else:  # the pass is done and the database write dies

            def dies(*args, **kwargs):
                raise KeyboardInterrupt

            patched.setattr(harvest_module.db, "insert_examples", dies)
        with pytest.raises(KeyboardInterrupt):
            _run(engine, gpt2, config)
    assert database_snapshot(engine) == uninterrupted  # the killed run changed nothing
    _run(engine, gpt2, config)
    assert database_snapshot(engine) == uninterrupted
    assert not list((tmp_path / "b").rglob("*.partial"))


def _assert_empty(engine):
    with session_scope(engine) as session:
        assert all(n == 0 for n in db.count_rows(session).values())


def test_a_failure_while_writing_leaves_no_rows(
    engine, gpt2, corpus, sae_dir, tmp_path, monkeypatch
):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(db, "insert_examples", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(engine, gpt2, _config(corpus, sae_dir, tmp_path))
    _assert_empty(engine)


def test_bad_inputs_are_clear_errors_with_nothing_written(engine, gpt2, corpus, tmp_path):
    wrong_width = tmp_path / "wide"
    save_saelens(random_sae(d_in=24, hook_name="blocks.1.hook_resid_post"), wrong_width)
    cases = [
        (_config(corpus, wrong_width, tmp_path), "d_in is 24"),
        (_config(corpus, tmp_path / "missing", tmp_path), "missing"),
        (_config(corpus, wrong_width, tmp_path, tokens=10**9), "d_in is 24"),
    ]
    for config, message in cases:
        with pytest.raises(MonoscopeError, match=message):
            _run(engine, gpt2, config)
    _assert_empty(engine)


def test_a_budget_beyond_the_corpus_or_a_taken_name(engine, gpt2, corpus, sae_dir, tmp_path):
    with pytest.raises(MonoscopeError, match="more than the corpus holds"):
        _run(engine, gpt2, _config(corpus, sae_dir, tmp_path, tokens=10**9))
    _assert_empty(engine)
    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path))
    with pytest.raises(MonoscopeError, match="already in the database"):
        _run(engine, gpt2, _config(corpus, sae_dir, tmp_path))
    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path, name="again"))
    with session_scope(engine) as session:
        counts = db.count_rows(session)
    assert counts["saes"] == 2 and counts["features"] == 128


@pytest.mark.parametrize("work", ["label", "list"])
def test_replace_never_deletes_what_people_made(engine, gpt2, corpus, sae_dir, tmp_path, work):
    """--replace drops the SAE's features; with a hand-written label or a list entry on one, it
    is refused before any work and the database is left as it was."""
    from app.db.lists import add_item, create_list
    from app.db.review import add_label

    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path))
    with session_scope(engine) as session:
        feature = feature_detail(session, gpt2.name, "res1", 3).feature
        if work == "label":
            add_label(session, feature, "the word 'fog'", author="ada")
        else:
            add_item(session, create_list(session, "Fog", "", author="ada"), feature)
    before = database_snapshot(engine)
    with pytest.raises(MonoscopeError, match=r"holds work people did .* --replace would delete"):
        _run(engine, gpt2, _config(corpus, sae_dir, tmp_path, replace=True))
    assert database_snapshot(engine) == before
    _run(engine, gpt2, _config(corpus, sae_dir, tmp_path, name="again", replace=True))


@pytest.mark.parametrize("rescale", [False, True])
def test_a_feature_with_a_zero_decoder_row_harvests_and_renders(
    engine, gpt2, corpus, tmp_path, rescale
):
    """A dead direction (all-zero decoder row) is legal in a file and must not become NaN."""
    from fastapi.testclient import TestClient

    from app.settings import Settings
    from app.web.app import create_app

    extra = {"k": 8, "rescale_acts_by_decoder_norm": True} if rescale else {}
    sae = random_sae(d_sae=64, architecture="topk" if rescale else "standard", seed=3, **extra)
    with torch.no_grad():
        sae.W_dec[5] = 0.0
    folder = tmp_path / "zero-row"
    save_saelens(sae, folder)
    HarvestJob(_config(corpus, folder, tmp_path), engine, model=gpt2).run()
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url))) as client:
        for index in (5, 6):
            page = client.get(f"/{gpt2.name}/zero-row/{index}")
            assert page.status_code == 200, page.text[-500:]
            api = client.get(f"/api/v1/features/{gpt2.name}/zero-row/{index}")
            assert api.status_code == 200 and "NaN" not in api.text
        assert client.get(f"/{gpt2.name}/zero-row").status_code == 200


def test_a_transcoder_harvests_from_the_mlp_input_and_renders_as_one(
    engine, gpt2, corpus, tmp_path
):
    """Activations come from the MLP's input; logit effects and the pages follow the output."""
    from fastapi.testclient import TestClient

    from app.core.sae import load_sae
    from app.settings import Settings
    from app.web.app import create_app

    folder = tmp_path / "tc1"
    save_saelens(random_transcoder(layer=1, d_sae=64, seed=5), folder)
    HarvestJob(_config(corpus, folder, tmp_path), engine, model=gpt2).run()
    transcoder = gpt2.attach(load_sae(str(folder)))
    ids = torch.from_numpy(np.asarray(corpus.ids[: TOKENS // CONTEXT], np.int64))
    x = gpt2.capture(ids, ["blocks.1.hook_mlp_in"])["blocks.1.hook_mlp_in"]
    counted = torch.from_numpy(corpus.counted_mask(0, len(ids)))
    flat = (transcoder.encode(x) * counted[..., None])[counted]
    W_U = gpt2.unembedding().float() * gpt2.final_norm_scale()
    with session_scope(engine) as session:
        for index in (0, 9):
            feature = feature_detail(session, gpt2.name, "tc1", index).feature
            assert feature.max_act == pytest.approx(float(flat[:, index].max()), rel=1e-5)
            assert feature.density == pytest.approx(float((flat[:, index] > 0).float().mean()))
            effects = transcoder.W_dec[index].float() @ W_U.T
            assert [t[0] for t in feature.top_logits] == effects.topk(4).indices.tolist()
        row = feature_detail(session, gpt2.name, "tc1", 0).sae
        assert (row.site, row.site_out) == ("blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out")
        assert row.metrics["eval_tokens"] > 0 and "ce_loss_recovered" in row.metrics
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url))) as client:
        page = client.get(f"/{gpt2.name}/tc1")
        assert page.status_code == 200 and "blocks.1.hook_mlp_out" in page.text
        assert "transcoder" in page.text
        assert client.get(f"/{gpt2.name}/tc1/0").status_code == 200
        listed = {s["name"]: s for s in client.get("/api/v1/saes").json()}
        assert listed["tc1"]["site_out"] == "blocks.1.hook_mlp_out"


# -- sharded on Ray ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two CPU workers (no network), shared by the module's tests, joined
    as the jobs join it (with its settings for this process)."""
    ray = pytest.importorskip("ray")
    join_cluster("local", 2)
    yield ray
    ray.shutdown()


def _sharded(corpus, sae_dir, gpt2_dir, tmp_path, **changes) -> HarvestConfig:
    """Workers load the model by its source, so both runs name the same one."""
    return _config(corpus, sae_dir, tmp_path, model=str(gpt2_dir), **changes)


def _ray_workers(busy_only: bool = False) -> list[int]:
    """Process ids of harvest workers, as Ray titles them ('ray::HarvestWorker.run' at work)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::HarvestWorker") and (not busy_only or b".run" in title):
            found.append(int(entry.name))
    return found


def test_a_sharded_harvest_writes_the_same_database(
    engine, gpt2, gpt2_dir, corpus, sae_dir, tmp_path, ray_cluster
):
    _run(engine, gpt2, _sharded(corpus, sae_dir, gpt2_dir, tmp_path / "a"))
    single = database_snapshot(engine)
    config = _sharded(corpus, sae_dir, gpt2_dir, tmp_path / "b", replace=True, ray="local")
    result = _run(engine, gpt2, config)
    assert database_snapshot(engine) == single
    assert result.tokens == single["saes"][0][2]["tokens"]
    for _ in range(100):  # the job's workers end with it (Ray stops them asynchronously)
        if not _ray_workers():
            break
        time.sleep(0.1)
    assert _ray_workers() == []


def test_a_worker_killed_mid_harvest_is_replaced_and_the_result_is_the_same(
    engine, gpt2, gpt2_dir, corpus, sae_dir, tmp_path, monkeypatch, ray_cluster
):
    import os
    import signal

    one_batch_chunks = {"checkpoint_every": 1}  # ten chunks: most still to run at the kill
    _run(engine, gpt2, _sharded(corpus, sae_dir, gpt2_dir, tmp_path / "a", **one_batch_chunks))
    single = database_snapshot(engine)
    real_write, killed = HarvestJob._write_shard, []

    def kill_a_worker_first(work, start, end, arrays):
        if not killed:  # the first chunk is back; the others are queued or running on workers
            victims = _ray_workers(busy_only=True) or _ray_workers()
            os.kill(victims[0], signal.SIGKILL)
            killed.append(victims[0])
        return real_write(work, start, end, arrays)

    monkeypatch.setattr(HarvestJob, "_write_shard", staticmethod(kill_a_worker_first))
    config = _sharded(
        corpus, sae_dir, gpt2_dir, tmp_path / "b", replace=True, ray="local", **one_batch_chunks
    )
    _run(engine, gpt2, config)
    assert killed and killed[0] not in _ray_workers()
    assert database_snapshot(engine) == single
