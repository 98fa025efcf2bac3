"""The CLI as a person runs it: real files, one error line on bad input. Commands run in this
process (tests.helpers.run_cli); two tests run the installed entry point as a real subprocess."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from app.core.sae import load_sae, save_saelens
from tests.helpers import random_sae, run_cli


def run_monoscope(*args, env=None):
    """The `monoscope` script on PATH (the package's entry point), in a process of its own."""
    command = shutil.which("monoscope", path=os.path.dirname(sys.executable))
    assert command is not None, "monoscope is not installed in this environment"
    return subprocess.run(
        [command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saes") / "res1"
    save_saelens(random_sae(hook_name="blocks.1.hook_resid_post"), folder)
    return folder


def test_inspect_lists_features(gpt2_dir, sae_dir):
    result = run_cli(
        "inspect",
        "--model",
        str(gpt2_dir),
        "--sae",
        str(sae_dir),
        "--device",
        "cpu",
        "--top",
        "3",
        "The Golden Gate Bridge",
    )
    assert result.returncode == 0, result.stderr
    assert "res1 (blocks.1.hook_resid_post)" in result.stdout and "strongest on" in result.stdout


def test_steer_prints_both_replies(gpt2_dir, sae_dir, tmp_path):
    result = run_cli(
        "steer",
        "--model",
        str(gpt2_dir),
        "--sae",
        str(sae_dir),
        "--device",
        "cpu",
        "-f",
        "res1/3:add:40:raw",
        "--max-tokens",
        "5",
        "Hello",
        env={"MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "default" in result.stdout and "steered" in result.stdout


def test_steer_takes_conditions_and_refuses_bad_ones_in_one_line(gpt2_dir, sae_dir, tmp_path):
    def steer(*args):
        return run_cli(
            "steer",
            *("--model", str(gpt2_dir), "--sae", str(sae_dir), "--device", "cpu"),
            *("--max-tokens", "6", "--temperature", "0", *args, "Hello"),
            env={"MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""},
        )

    def replies(result):
        assert result.returncode == 0, result.stderr
        _, default, steered = re.split(r"^(?:default|steered)$", result.stdout, flags=re.M)
        return default.strip(), steered.strip()

    steered = replies(steer("-f", "res1/3:add:40:raw"))
    assert steered[0] != steered[1]
    # a condition no activation meets leaves the steered reply the default one
    never = replies(steer("-f", "res1/3:add:40:raw:when:res1/5>10000"))
    assert never[1] == never[0] == steered[0]
    # a stop condition that always holds ends both replies at their first token
    stopped = replies(steer("-f", "res1/3:add:40:raw", "--stop-when", "res1/5>-1"))
    for short, full in zip(stopped, steered, strict=True):
        assert full.startswith(short) and len(short) < len(full)
    for bad, message in (
        (("--stop-when", "res1/5<1"), "error: bad condition 'res1/5<1'"),
        (("--stop-when", "res9/5>1"), "error: unknown SAE 'res9' in condition res9/5>1"),
        (("-f", "res1/3:add:4:raw:when:res1/999999>0"), "error: condition res1/999999>0"),
    ):
        result = steer("-f", "res1/3:add:40:raw", *bad)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(message)
        assert "Traceback" not in result.stderr


def test_settings_come_from_the_environment(gpt2_dir, sae_dir):
    result = run_cli(
        "inspect",
        "hi",
        env={
            "MONOSCOPE_MODEL": str(gpt2_dir),
            "MONOSCOPE_SAES": str(sae_dir),
            "MONOSCOPE_DEVICE": "cpu",
        },
    )
    assert result.returncode == 0, result.stderr and "res1" in result.stdout


def test_graph_prints_scores_and_writes_the_graph_file(tmp_path):
    """A ReLU GPT-2 with its exact transcoders saved as a circuit-tracer set."""
    from app.core.graph import read_graph_json
    from app.core.model import load_model
    from app.core.sae.formats import save_circuit_tracer_set
    from tests.helpers import N_LAYERS, build_relu_gpt2, exact_transcoder

    folder = build_relu_gpt2(tmp_path / "model")
    model = load_model(folder, device="cpu")
    layers = [exact_transcoder(model, layer) for layer in range(N_LAYERS)]
    save_circuit_tracer_set(layers, tmp_path / "set", model_name="tiny")
    out = tmp_path / "fog.json"
    args = ["graph", "--model", str(folder), "--transcoders", str(tmp_path / "set")]
    result = run_cli(*args, "--device", "cpu", "--json", str(out), "The fog rolls over the")
    assert result.returncode == 0, result.stderr
    assert "replacement" in result.stdout and "most influential features" in result.stdout
    graph = read_graph_json(json.loads(out.read_text()))
    assert graph.metadata["scan"] == "set" and graph.links
    wrong = run_cli("graph", "--model", str(folder), "--transcoders", str(tmp_path), "hi")
    assert wrong.returncode == 2 and "not a transcoder set" in wrong.stderr
    unnamed = run_cli("graph", "--model", str(folder), "hi")
    assert unnamed.returncode == 2 and "--transcoders DIR" in unnamed.stderr
    demo = run_cli("graph", "--device", "cpu", "--top", "3", "Tom's sister loved")
    assert demo.returncode == 0 and "most influential features" in demo.stdout
    text = tmp_path / "held-out.txt"
    text.write_text("\n\n".join(["The fog rolls over the bridge and the bay."] * 40))
    measured = run_cli(
        "eval",
        "replacement",
        "--model",
        str(folder),
        "--transcoders",
        str(tmp_path / "set"),
        "--corpus",
        str(text),
        "--contexts",
        "4",
        "--device",
        "cpu",
        "--json",
    )
    assert measured.returncode == 0, measured.stderr
    report = json.loads(measured.stdout)
    assert report["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)


def test_convert_sae_writes_saelens(tmp_path, sae_dir):
    result = run_cli("convert-sae", str(sae_dir), str(tmp_path / "copy"))
    assert result.returncode == 0, result.stderr
    assert load_sae(tmp_path / "copy").cfg == load_sae(sae_dir).cfg


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["inspect", "--model", "/nowhere", "hi"],
            "error: cannot load model '/nowhere': no such dir",
        ),
        (
            ["serve", "--model", "/nowhere"],
            "error: cannot load model '/nowhere': no such directory",
        ),
        (["convert-sae", "/nowhere", "/tmp/x"], "error: /nowhere: no such file or directory"),
        (["inspect", "--device", "tpu", "hi"], "error: device: Value error, unknown device 'tpu'"),
        (  # printed as written: rich would draw ":clamp:" as an emoji
            ["steer", "--model", "M", "-f", "res1:x", "hi"],
            "error: bad feature 'res1:x': write [MODEL/]SAE/INDEX:clamp|add|cap:STRENGTH"
            "[:max_act|raw][:all|prompt|generated][:when:CONDITION], "
            "e.g. monoscope-demo/res1/946:clamp:5",
        ),
    ],
)
def test_bad_input_is_one_error_line(args, message):
    result = run_cli(*args, env={"MONOSCOPE_MODEL": ""})
    assert result.returncode == 2
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr


def test_the_installed_command_refuses_bad_input_in_one_line():
    result = run_monoscope("inspect", "--model", "/nowhere", "hi", env={"MONOSCOPE_MODEL": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == "error: cannot load model '/nowhere': no such directory\n"


def test_the_installed_command_serves_the_demo_without_a_model():
    result = run_monoscope(
        "inspect", "--top", "2", "The Golden Gate Bridge", env={"MONOSCOPE_MODEL": ""}
    )
    assert result.returncode == 0, result.stderr
    assert "res1 (blocks.1.hook_resid_post)" in result.stdout


def test_sae_that_does_not_fit_the_model(gpt2_dir, tmp_path):
    save_saelens(random_sae(d_in=48), tmp_path / "wide")
    result = run_cli("inspect", "--model", str(gpt2_dir), "--sae", str(tmp_path / "wide"), "hi")
    assert result.returncode == 2 and "d_in is 48 but" in result.stderr


def test_every_command_is_documented_in_the_readme():
    from pathlib import Path

    import typer.main

    from app.cli import cli

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    group = typer.main.get_group(cli)
    names = [name for name in group.commands if name != "eval"]
    names += [f"eval {sub}" for sub in group.commands["eval"].commands]
    for name in names:
        assert f"monoscope {name}" in readme, name


def test_train_sae_refuses_relu_without_l1(gpt2_dir, tmp_path):
    result = run_cli(
        "train-sae",
        str(tmp_path / "out"),
        "--model",
        str(gpt2_dir),
        "--site",
        "blocks.1.hook_resid_post",
        "--corpus",
        "demo-world",
        "--k",
        "0",
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: a ReLU SAE (--k 0) needs an L1 coefficient")


def test_eval_ground_truth_prints_json_for_the_demo(tmp_path):
    import json

    env = {"MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""}
    result = run_cli(
        "eval", "ground-truth", "--json", "--documents", "300", "--device", "cpu", env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["concepts_evaluated"] == len(report["concepts"]) > 20
    assert 0 <= report["fraction_f1_at_least_0.5"] <= 1
    best = report["concepts"][0]
    assert {"key", "feature", "f1", "precision", "recall", "occurrences"} <= best.keys()
    assert report["span_concepts_evaluated"] == len(report["spans"]) > 10
    span = report["spans"][0]
    assert 1 <= len(span["features"]) <= 3 and span["f1_union"] >= span["f1_single"]
    assert report["documents"] == []  # the first world has no topics or personas
    v2 = run_cli(
        "eval", "ground-truth", "--json", "--world-version", "2", "--documents", "300",
        "--device", "cpu", env=env,
    )  # fmt: skip
    assert v2.returncode == 0, v2.stderr
    labels = {d["label"] for d in json.loads(v2.stdout)["documents"]}
    assert "topic/golden gate bridge" in labels and "persona/pirate" in labels


def test_eval_classifier_measures_held_out_documents_beside_the_prompted_model(tmp_path):
    import json

    env = {"MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""}
    common = ("--per-class", "8", "--seed", "12", "--device", "cpu")
    result = run_cli("eval", "classifier", "--json", *common, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == "places/golden_gate_bridge"
    for key in ("learned", "single_feature", "baseline"):
        held = report[key]["held_out"]
        assert held["texts"] == 16 and held["positives"] == 8 and 0 <= held["f1"] <= 1
    assert report["learned"]["held_out"]["f1"] >= 0.9  # the bridge is named in every positive
    assert re.fullmatch(r"res[13]/\d+", report["single_feature"]["feature"])
    bad = run_cli("eval", "classifier", "--target", "topic/nowhere", *common, env=env)
    assert bad.returncode == 2 and "error: only 0 documents" in bad.stderr


def test_eval_steering_judges_replies_steered_by_a_feature_ground_truth_names(tmp_path):
    import json

    env = {"MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""}
    result = run_cli(
        "eval", "steering", "--json", "--target", "places/golden_gate_bridge", "--strength", "10",
        "--seeds", "2", "--documents", "200", "--device", "cpu", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (at_ten,) = report["strengths"]
    assert at_ten["strength"] == 10 and report["max_activation"] > 0
    assert 0 <= at_ten["steered_share"] <= at_ten["steered_on_aim"] <= 1
    assert len(at_ten["steered"]) == 5 and at_ten["default_loss"] > 0
    for bad, message in (
        (["--target", "persona/pirat"], "error: unknown persona 'pirat'"),
        (["--target", "places/atlantis"], "error: unknown concept 'places/atlantis'"),
        (["--target", "topic/atlantis"], "error: unknown topic 'atlantis'"),
        (["--mode", "scale"], "error: unknown steering mode 'scale'"),
    ):
        failed = run_cli("eval", "steering", "--documents", "100", *bad, env=env)
        assert failed.returncode == 2 and failed.stderr.startswith(message), failed.stderr


@pytest.mark.slow  # reads 800 documents, trains a probe per concept and asks 20 questions
def test_eval_world_structure_measures_the_model_before_any_sae(tmp_path):
    import json

    env = {"MONOSCOPE_DATA_DIR": str(tmp_path), "MONOSCOPE_DATABASE_URL": ""}
    result = run_cli(
        "eval", "world-structure", "--json", "--world-version", "2", "--documents", "800",
        "--two-hop-documents", "150", "--device", "cpu", "--site", "blocks.0.hook_resid_pre",
        "--site", "blocks.1.hook_resid_post", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    embeddings, report = json.loads(result.stdout)
    assert (embeddings["site"], report["site"]) == (
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_post",
    )
    # the text, the two-hop replies and the copying gain are the model's: alike at every site
    shared = ("tokens", "two_hop_questions", "two_hop_accuracy", "copying_gain")
    assert all(embeddings[name] == report[name] for name in shared)
    assert embeddings["identity_share"] != report["identity_share"]
    assert 0 < report["identity_share"] < 1 and "animals" in report["identity_by_category"]
    assert report["probe_concepts"] > 10 and 0 <= report["probe_separated"] <= 1
    assert 0 <= report["probe_precise"] <= 1
    assert report["two_hop_questions"] > 10 and 0 <= report["two_hop_accuracy"] <= 1
    assert 0 <= report["two_hop_middle_hop"] <= 1
    assert 0 <= report["two_hop_answer_given_middle"] <= 1
    assert isinstance(report["copying_gain"], float)
    bad = run_cli("eval", "world-structure", "--world-version", "3", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: the demo world has versions")


def test_ingest_then_harvest_into_the_database(gpt2_dir, sae_dir, tmp_path):
    env = {"MONOSCOPE_DATA_DIR": str(tmp_path / "data"), "MONOSCOPE_DATABASE_URL": ""}
    (tmp_path / "corpus.jsonl").write_text(
        "".join(f'{{"text": "Document {i}: the fox saw the bridge."}}\n' for i in range(400))
    )
    store = tmp_path / "store"
    ingested = run_cli(
        "ingest",
        str(tmp_path / "corpus.jsonl"),
        str(store),
        "--model",
        str(gpt2_dir),
        "--context-size",
        "32",
        env=env,
    )
    assert ingested.returncode == 0, ingested.stderr
    assert "contexts × 32 tokens from 400 documents" in ingested.stdout
    harvest = ["harvest", "--model", str(gpt2_dir), "--sae", str(sae_dir), "--corpus", str(store)]
    done = run_cli(*harvest, "--tokens", "2048", env=env)
    assert done.returncode == 0, done.stderr
    assert "features alive" in done.stdout and "variance_explained" in done.stdout
    assert (tmp_path / "data" / "monoscope.db").is_file()
    again = run_cli(*harvest, "--tokens", "2048", env=env)
    assert again.returncode == 2 and "already in the database; pass --replace" in again.stderr
    too_many = run_cli(*harvest, "--tokens", "10000000", "--name", "other", env=env)
    assert too_many.returncode == 2
    last_line = too_many.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: --tokens 10,000,000 is more than the corpus holds")
    steer = ["steer", "--model", str(gpt2_dir), "--sae", str(sae_dir), "--device", "cpu"]
    steered = run_cli(*steer, "-f", "res1/3:add:2", "--max-tokens", "3", "Hello", env=env)
    assert steered.returncode == 0, steered.stderr  # 2 × the max activation harvest stored
    unknown = run_cli(*steer, "-f", "res1/4000:add:2", "--max-tokens", "3", "Hello", env=env)
    assert unknown.returncode == 2 and "outside SAE 'res1'" in unknown.stderr
    name = gpt2_dir.name
    labelled = run_cli("explain", "--model", name, "--sae", "res1", env=env)
    assert labelled.returncode == 0 and "labelled" in labelled.stdout, labelled.stderr
    again = run_cli("explain", "--model", name, "--sae", "res1", env=env)
    assert "labelled 0 features" in again.stdout
    scored = run_cli("score", "--model", name, "--sae", "res1", env=env)
    assert scored.returncode == 0 and "scored" in scored.stdout, scored.stderr
    judged = run_cli("score", "--model", name, "--sae", "res1", "--scorer", "detection", env=env)
    assert judged.returncode == 2 and "need an LLM" in judged.stderr
    embedded = run_cli("embed-labels", "--model", name, "--sae", "res1", env=env)
    assert embedded.returncode == 0 and "embedded" in embedded.stdout, embedded.stderr
    again = run_cli("embed-labels", "--model", name, "--sae", "res1", env=env)
    assert "embedded 0 labels" in again.stdout
    missing = run_cli("embed-labels", "--model", name, "--sae", "nope", env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no SAE")
    added = run_cli(
        "add-sae",
        str(sae_dir),
        "--model",
        str(gpt2_dir),
        "--corpus",
        str(store),
        "--tokens",
        "2048",
        "--name",
        "added",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    assert all(word in added.stdout for word in ("labelled", "embedded", "scored"))


def test_harvest_with_an_unreachable_database_is_one_line(sae_dir, tmp_path):
    result = run_cli(
        "harvest",
        "--sae",
        str(sae_dir),
        "--corpus",
        "demo-world",
        env={"MONOSCOPE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert result.returncode == 2 and result.stderr.startswith("error: cannot open database")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "sae, extra, error",
    [
        ("hf://owner/repo/../../../../etc", [], "'..' parts are not allowed"),
        (None, ["--name", "../../evil"], "error: bad name '../../evil'"),
    ],
)
def test_import_paths_and_names_cannot_escape(sae_dir, gpt2_dir, tmp_path, sae, extra, error):
    result = run_cli(
        "harvest",
        "--model",
        str(gpt2_dir),
        "--sae",
        sae or str(sae_dir),
        "--corpus",
        "demo-world",
        *extra,
        env={"MONOSCOPE_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2 and error in result.stderr
    assert "Traceback" not in result.stderr


def test_every_setting_is_documented_in_the_readme():
    from pathlib import Path

    from app.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"MONOSCOPE_{name.upper()}" in readme, name
