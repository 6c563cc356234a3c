"""The contracts between stages, each with one owner: spec texts (campaign.specs), the id grammar
(core.ids), the task registry (core.tasks), the model card (learn.card) and the config reference
generated from the schema."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from hrtemflow.campaign.config import load_config, load_schema
from hrtemflow.campaign.plan import make_plan
from hrtemflow.campaign.reference import schema_markdown
from hrtemflow.campaign.specs import spec_texts, train_spec
from hrtemflow.core import ids
from hrtemflow.core.errors import HrtemflowError
from hrtemflow.core.tasks import TASKS, Target, Task
from hrtemflow.learn.card import ModelCard
from hrtemflow.learn.preprocess import NORMALISATION


def _digest(texts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for path in sorted(texts):
        h.update(path.encode())
        h.update(b"\0")
        h.update(texts[path].encode())
        h.update(b"\0")
    return h.hexdigest()


def test_spec_texts_of_every_committed_config_are_those_of_before_the_move(repo_root, monkeypatch):
    """An upgrade must rerun nothing it need not: the demo's and every bench's spec files keep their bytes
    (tests/data/spec_hashes.json). They were recorded before the staged-package move and again only for
    deliberate changes of the physics: tubes imaged at the measured 1.42 Å bond (families.cnt.structure.bond_A)."""
    monkeypatch.chdir(repo_root)
    recorded = json.loads((repo_root / "tests" / "data" / "spec_hashes.json").read_text())["configs"]
    benches = sorted(p.relative_to(repo_root).as_posix() for p in (repo_root / "config").glob("bench-*.yaml"))
    assert set(recorded) >= {"config/config.yaml", *benches}, (
        "a new bench config: record its spec hash in tests/data/spec_hashes.json"
    )
    for path, want in recorded.items():
        texts = spec_texts(make_plan(load_config(path)))
        assert (len(texts), _digest(texts)) == (want["n_specs"], want["sha256"]), f"{path}: spec texts changed"


def test_config_reference_is_generated_from_the_schema(repo_root):
    """config/README.md is what `hrtemflow config-doc` writes: every key of the schema, nothing stale."""
    text = (repo_root / "config" / "README.md").read_text(encoding="utf-8")
    assert text == schema_markdown(), "config/README.md is stale: run `hrtemflow config-doc`"
    for task in TASKS:
        assert f"`learning.tasks.{task}.epochs`" in text


@pytest.mark.parametrize("group", ["nanoalloy-core-shell", "cnt-10-10", "amorphous"])
def test_ids_round_trip(group):
    sample = ids.sample_id(group, 12)
    image = ids.image_id(sample, 3, 7)
    assert ids.group_of(sample) == group and ids.family_of(image) == group.split("-")[0]
    assert ids.parse_image_id(image) == (sample, 3, 7)
    assert ids.views_of([image]).tolist() == [ids.view_id(sample, 3)]
    assert ids.shard_name(group, 4) == f"{group}-s00004"
    with pytest.raises(ValueError):
        ids.family_of("graphene-0000001")
    with pytest.raises(ValueError):
        ids.parse_image_id(sample)


def _card(**over) -> dict:
    card = ModelCard(
        task="chirality",
        kind="classification",
        input_size=32,
        pixel_size_A=0.5,
        normalisation=dict(NORMALISATION),
        dataset_sha256="x" * 64,
        hyper={"batch_size": 8},
        classes=["10-0", "8-4"],
    )
    return {**card.to_json(), **over}


@pytest.mark.parametrize(
    ("card", "key"),
    [
        ([], "not a JSON object"),
        (None, "not a JSON object"),
        ("card", "not a JSON object"),
        (_card(task=None), "task"),
        ({k: v for k, v in _card().items() if k != "task"}, "task: missing"),
        (_card(task="graphene"), "task"),
        (_card(kind="regression"), "kind"),
        (_card(input_size=True), "input_size"),
        (_card(input_size=1e400), "input_size"),
        (_card(pixel_size_A=float("nan")), "pixel_size_A"),
        (_card(pixel_size_A=-1), "pixel_size_A"),
        (_card(normalisation={**NORMALISATION, "function": "x.y"}), "normalisation"),
        (_card(normalisation={**NORMALISATION, "eps": 0}), "normalisation.eps"),
        (_card(classes=["a"]), "classes"),
        (_card(classes=["a", "a"]), "classes"),
        (_card(classes="ab"), "classes"),
        (_card(hyper=[]), "hyper"),
        (_card(temperature=-1), "temperature"),
        (_card(imaging="x"), "imaging"),
        (
            _card(task="aberrations", kind="regression", targets=[{"name": "defocus_A", "offset": 0, "scale": 1}]),
            "targets",
        ),
    ],
)
def test_card_is_validated_as_a_whole(card, key):
    with pytest.raises(HrtemflowError) as err:
        ModelCard.from_json(card, "model bundle B")
    message = str(err.value)
    assert message.startswith("model bundle B: ") and key in message and len(message) < 1000 and "\n" not in message


def test_card_round_trips_and_keeps_the_keys_of_older_cards():
    card = ModelCard.from_json(_card())
    assert ModelCard.from_json(card.to_json()) == card
    assert set(card.to_json()) == {
        "card_version",
        "task",
        "kind",
        "output",
        "input_size",
        "input",
        "pixel_size_A",
        "normalisation",
        "augmentation",
        "dataset_sha256",
        "imaging",
        "spec_sha256",
        "split",
        "metrics",
        "epochs_run",
        "best_epoch",
        "stopped_early",
        "history",
        "hyper",
        "seed",
        "mixed_precision",
        "dtype_policy",
        "backend",
        "n_params",
        "versions",
        "classes",
    }
    assert ModelCard.from_json({**_card(), "calibration": {"temperature": 2}}).classes == [
        "10-0",
        "8-4",
    ]  # unknown keys pass


TOY = Task(
    "toy_energy",
    "regression",
    ("nanoalloy",),
    "a toy regressor of the particle's energy per atom",
    targets=(Target("energy_per_atom_eV", "eV"),),
    labels=("energy_per_atom_eV",),
    make_targets=lambda params, labels: labels["energy_per_atom_eV"][:, None],
    physical=lambda y: {"energy_per_atom_eV": (y[:, 0], "eV")},
    model_name="toy_regressor",
)


@pytest.fixture
def toy_task(monkeypatch):
    monkeypatch.setitem(TASKS, TOY.name, TOY)
    load_schema.cache_clear()
    yield TOY
    monkeypatch.delitem(TASKS, TOY.name)
    load_schema.cache_clear()


def test_a_sixth_task_is_one_registry_entry(toy_task, demo_cfg, repo_root, tmp_path, monkeypatch):
    """Registering a task is all it takes for the config, the plan, training, evaluation and predict
    to handle it (its model is the generic regressor, so no model function is needed)."""
    from hrtemflow.apply.options import Options
    from hrtemflow.apply.predict import predict_path
    from hrtemflow.learn import evaluate as ev
    from hrtemflow.learn import train as tr
    from test_learn_data import make_spec

    cfg = load_config(
        {
            **demo_cfg,
            "learning": {
                **demo_cfg["learning"],
                "tasks": {**demo_cfg["learning"]["tasks"], "toy_energy": {"epochs": 1}},
            },
        },
        base=repo_root,
    )
    plan = make_plan(cfg)
    assert "toy_energy" in plan.tasks()
    spec = train_spec(plan, "toy_energy")
    assert spec["targets"] == ["energy_per_atom_eV"] and spec["families"] == ["nanoalloy"] and spec["classes"] is None
    schema_text = schema_markdown()
    assert "`learning.tasks.toy_energy.epochs`" in schema_text

    root = tmp_path
    spec = {
        **make_spec(root, "structure", epochs=1, batch_size=16),
        "task": "toy_energy",
        "targets": ["energy_per_atom_eV"],
    }
    card = tr.train(spec, root / "models" / "toy", base=root, progress=False)
    assert card.task == "toy_energy" and [t["name"] for t in card.targets] == ["energy_per_atom_eV"]
    metrics = ev.evaluate(spec, root / "models" / "toy", root / "reports" / "toy", base=root)
    assert np.isfinite(metrics["targets"]["energy_per_atom_eV"]["mae"])
    micrograph = tmp_path / "m.npy"
    np.save(micrograph, np.random.default_rng(0).poisson(50, (96, 96)).astype(np.float32))
    summary = predict_path(
        micrograph,
        [root / "models" / "toy"],
        tmp_path / "out",
        Options(pixel_size_nm=card.pixel_size_A / 10),
        progress=False,
        echo=lambda *a, **k: None,
    )
    row = json.loads((tmp_path / "out" / "m" / "predictions.json").read_text())["regions"][0]
    assert summary["n_micrographs"] == 1 and "energy_per_atom_eV" in row["toy_energy"]["values"]


def test_registry_entries_are_consistent():
    for name, task in TASKS.items():
        assert task.name == name and task.families and task.model_name
        if task.kind == "classification":
            assert task.classes and task.classes_from and task.class_label and not task.targets
        if task.kind == "regression":
            assert task.targets and task.make_targets and task.physical and (task.params or task.labels)
        if task.sign_flips:
            assert all(not task.targets[c].centred for c in task.sign_flips)  # their offset stays 0 so a flip is exact
    assert dataclasses.replace(TASKS["aberrations"]).spectrum_by_default
