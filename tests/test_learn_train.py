"""Learning stage, training and evaluation end to end on small fringe shards (see test_learn_data).

Tiny models (width 8, depth 2) on 32 px images for a few epochs: each training takes seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import zarr

from hrtemflow.cli import main
from hrtemflow.core.errors import HrtemflowError
from hrtemflow.learn import evaluate as ev
from hrtemflow.learn import train as tr
from hrtemflow.learn.bundle import load_checked as load_bundle
from hrtemflow.learn.feed import ShardFeed
from hrtemflow.learn.inference import softmax
from hrtemflow.learn.preprocess import normalise
from hrtemflow.learn.table import Table, prepare
from test_learn_data import FRINGE_IMAGING, make_spec

# TensorFlow tensors lack the numpy-2 `copy` keyword; Keras converts them many times a step
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learn-train")


@pytest.fixture(scope="module")
def chirality(root) -> tuple[dict, Path]:
    """A chirality model trained through the CLI (6 epochs): its spec and bundle folder."""
    spec = make_spec(root, "chirality", epochs=6)
    spec_path = root / "plan" / "chirality.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    out = root / "models" / "chirality"
    assert main(["train", str(spec_path), "--out-dir", str(out), "--base", str(root), "--quiet"]) == 0
    return spec, out


def test_training_writes_a_bundle_that_loads_in_safe_mode(chirality, root):
    spec, out = chirality
    model, card = load_bundle(out)
    assert card.task == "chirality" and card.kind == "classification" and card.classes == spec["classes"]
    assert card.input_size == 32 and model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 4)
    assert card.epochs_run == 6 and 1 <= card.best_epoch <= 6 and len(card.history["loss"]) == 6
    backend = keras.backend.backend()  # tensorflow unless KERAS_BACKEND says otherwise
    assert card.backend == backend and card.versions["keras_backend"] == backend and card.versions["keras"]
    assert card.normalisation["function"] == "hrtemflow.learn.data.normalise"
    assert card.split["structures"] == {"train": 16, "val": 4, "test": 4}
    assert 30 / 32 * 0.9 < card.pixel_size_A < 40 / 32 * 1.1  # median of s32/pixel_size_A (fov 30-40 Å)
    assert len(card.dataset_sha256) == 64 and card.mixed_precision is False
    assert card.hyper["spectral_width"] == 0  # resolved from the task's default: the card says what was built
    # what the training images were taken with, so a user knows which micrographs the bundle is for
    assert card.imaging == [
        {
            "family": "cnt",
            "energy_kV": 80,
            "optics": FRINGE_IMAGING["optics"],
            "detector": None,
            "noise": FRINGE_IMAGING["noise"],
        }
    ]
    # fringes are learnable: chance is 0.25, and 16 of 32 right by chance has p < 0.001 (under JAX the
    # same 6 epochs, from other initial weights, land on exactly 0.5)
    assert card.metrics["val"]["accuracy"] >= 0.5
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(axis=1), 1, rtol=1e-5)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 6 and (out / "checkpoint" / "last.keras").is_file()


def test_evaluation_of_a_classifier(chirality, root):
    spec, out = chirality
    report = root / "reports" / "chirality"
    assert (
        main(
            [
                "evaluate",
                str(root / "plan" / "chirality.json"),
                "--model-dir",
                str(out),
                "--out-dir",
                str(report),
                "--base",
                str(root),
            ]
        )
        == 0
    )
    m = json.loads((report / "metrics.json").read_text())
    assert m["n_images"] == 32 and m["n_structures"] == 4 and m["accuracy"] > 0.4
    assert set(m["per_class_recall"]) == set(spec["classes"]) and m["top3_accuracy"] >= m["accuracy"]
    assert np.array(m["confusion_matrix"]["counts"]).sum() == 32
    assert m["temperature"] > 0 and m["ece_after"] is not None and m["nll_after"] <= m["nll_before"] + 0.05
    single = m["single_pass"]  # without test-time augmentation, beside the predict-like headline
    assert single["accuracy"] > 0.3 and single["temperature"] > 0 and single["top3_accuracy"] >= single["accuracy"]
    assert "8 symmetry elements" in m["test_time_augmentation"]
    assert m["per_structure"]["n_groups"] == 4 and m["per_structure"]["images_per_group"] == 8
    views = m["per_view"]  # the test shards image each structure in 2 views of 4 optics variants
    assert views["n_groups"] == 8 and views["images_per_group"] == 4 and 0 <= views["accuracy"] <= 1
    lo, hi = m["ci95"]["accuracy"]
    assert 0 <= lo <= m["accuracy"] <= hi <= 1 and m["ci95"]["top3_accuracy"][1] <= 1
    # accuracy by imaging condition: quartile bins that cover the test split, each accuracy inside its interval
    conditions = m["by_condition"]
    for key in ("dose", "defocus", "c12"):
        bins = conditions[key]["bins"]
        assert 1 <= len(bins) <= 4 and sum(b["n_images"] for b in bins) == m["n_images"]
        assert all(b["range"][0] <= b["range"][1] and b["ci95"][0] <= b["accuracy"] <= b["ci95"][1] for b in bins)
        assert all(a["range"][1] <= b["range"][0] + 1e-9 for a, b in zip(bins, bins[1:]))
    correct = sum(b["accuracy"] * b["n_images"] for b in conditions["dose"]["bins"])
    assert correct == pytest.approx(m["accuracy"] * m["n_images"])
    assert m["figures"] == ["figures/confusion.png", "figures/calibration.png", "figures/conditions.png"]
    for name in m["figures"]:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_by_condition_bins_and_a_fixed_condition(monkeypatch):
    """Quartile bins with their own counts; a condition every image shares (a fixed dose) is one bin."""
    sample_id = np.repeat([f"s{k}" for k in range(10)], 4)
    table = Table("ordering", ("x.zarr",), np.zeros(40, int), np.arange(40), sample_id, np.zeros(40, int), np.ones(40))
    values = {"dose_e_per_A2": np.full(40, 500.0), "defocus_A": np.linspace(-400, 400, 40), "c12_A": np.arange(40.0)}
    monkeypatch.setattr(ev, "shard_param", lambda t, name: values[name])
    correct = np.arange(40) >= 20  # right on the second half of the C12 range only
    got = ev.by_condition(correct, table)
    assert ev.by_condition(np.arange(40.0), table, "mae")["dose"]["bins"][0]["mae"] == pytest.approx(
        19.5
    )  # a regressor's error
    assert [(b["n_images"], b["accuracy"]) for b in got["dose"]["bins"]] == [(40, 0.5)]
    assert [b["accuracy"] for b in got["c12"]["bins"]] == [0.0, 0.0, 1.0, 1.0]
    assert got["c12"]["bins"][0]["range"] == [0.0, pytest.approx(0.975)] and got["c12"]["label"] == "C12 (nm)"
    assert got["defocus"]["bins"][-1]["range"][1] == pytest.approx(40.0)  # |defocus| in nm
    assert sum(b["n_images"] for b in got["defocus"]["bins"]) == 40


def test_resume_continues_from_the_checkpoint(root, monkeypatch, capsys):
    spec = make_spec(root, "ordering", epochs=3, patience=10)
    out = root / "models" / "ordering"
    original = tr._Checkpoint.on_epoch_end

    def killed_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt  # the job is killed right after checkpointing epoch 2

    monkeypatch.setattr(tr._Checkpoint, "on_epoch_end", killed_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        tr.train(spec, out, base=root, progress=False)
    assert not (out / "card.json").exists()
    first = json.loads((out / "checkpoint" / "state.json").read_text())
    assert first["epoch"] == 2
    monkeypatch.setattr(tr._Checkpoint, "on_epoch_end", original)

    card = tr.train(spec, out, base=root, progress=False)
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert card.epochs_run == 3 and len(card.history["loss"]) == 3
    assert card.history["loss"][:2] == first["history"]["loss"]  # the first two epochs were not rerun

    more = tr.train(
        {**spec, "hyper": {**spec["hyper"], "epochs": 4}}, out, base=root, progress=False
    )  # raising epochs continues
    assert more.epochs_run == 4 and more.history["loss"][:3] == card.history["loss"]

    fewer = tr.train(
        {**spec, "hyper": {**spec["hyper"], "epochs": 2}}, out, base=root, progress=False
    )  # cannot be continued
    assert "starting over" in capsys.readouterr().out and fewer.epochs_run == 2

    fresh = tr.train({**spec, "hyper": {**spec["hyper"], "epochs": 1}}, out, base=root, progress=False, resume=False)
    assert fresh.epochs_run == 1 and len(fresh.history["loss"]) == 1

    other = tr.train(
        {**spec, "hyper": {**spec["hyper"], "epochs": 1, "learning_rate": 1e-3}}, out, base=root, progress=False
    )
    assert "starting over" in capsys.readouterr().out and other.epochs_run == 1

    # under a cosine schedule the rate curve spans the planned epochs: a shorter run's checkpoint has
    # decayed already, so raising epochs starts over instead of continuing at a near-zero rate
    cosine = {**spec, "hyper": {**spec["hyper"], "epochs": 1, "lr_schedule": "cosine"}}
    tr.train(cosine, out, base=root, progress=False)
    capsys.readouterr()
    longer = tr.train({**cosine, "hyper": {**cosine["hyper"], "epochs": 2}}, out, base=root, progress=False)
    printed = capsys.readouterr().out
    assert "starting over" in printed and "resuming" not in printed and longer.epochs_run == 2


def test_regression_bundle_and_evaluation(root):
    spec = make_spec(root, "aberrations", epochs=2)
    out, report = root / "models" / "aberrations", root / "reports" / "aberrations"
    card = tr.train(spec, out, base=root, progress=False, cache_bytes=0)  # streamed from the shards, not cached
    assert [t["name"] for t in card.targets] == ["defocus_A", "c12_cos2phi_A", "c12_sin2phi_A", "c12_magnitude_A"]
    assert card.targets[1]["offset"] == 0 and card.targets[2]["offset"] == 0  # sign flips stay exact
    assert all(0 < t["scale"] < 1e3 for t in card.targets) and "targets" in card.augmentation
    m = ev.evaluate(spec, out, report, base=root)
    t = m["targets"]
    assert set(t) >= {"defocus_nm", "c12_magnitude_nm"} and t["defocus_nm"]["unit"] == "nm"
    assert t["c12_magnitude_nm"]["mae"] >= 0 and t["defocus_nm"]["rmse"] >= t["defocus_nm"]["mae"]
    assert t["c12_magnitude_nm"]["mae_modulus_of_components"] >= 0  # the old estimate, side by side
    assert all(v["mae_ci95"][0] <= v["mae"] <= v["mae_ci95"][1] for k, v in t.items() if "mae_ci95" in v)
    assert (
        all(v["mae_single_pass"] >= 0 for k, v in t.items() if "mae_single_pass" in v)
        and "mae_single_pass" in t["defocus_nm"]
    )
    assert (report / "figures" / "scatter.png").is_file() and json.loads((report / "metrics.json").read_text())[
        "kind"
    ] == "regression"
    # error by imaging condition, per target: the bins cover the test split and average back to the MAE
    for v in t.values():
        if "by_condition" not in v:
            continue
        bins = v["by_condition"]["defocus"]["bins"]
        assert sum(b["n_images"] for b in bins) == m["n_images"] and all(
            b["ci95"][0] <= b["mae"] <= b["ci95"][1] for b in bins
        )
        assert sum(b["mae"] * b["n_images"] for b in bins) == pytest.approx(v["mae"] * m["n_images"])
    assert "per_structure" not in t["defocus_nm"]  # each exposure has its own defocus: nothing to average
    assert m["figures"] == ["figures/scatter.png", "figures/conditions.png"]
    assert (report / "figures" / "conditions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_denoiser_against_classical_baselines(root):
    spec = make_spec(root, "denoise", epochs=2, batch_size=8)
    out, report = root / "models" / "denoise", root / "reports" / "denoise"
    tr.train(spec, out, base=root, progress=False)
    m = ev.evaluate(spec, out, report, base=root, max_baseline_images=4)
    assert m["target"] == "clean" and "favours the network" in m["protocol"]
    families = m["comparison"]["families"]
    assert families, "no family compared"
    for r in families.values():
        methods = r["methods"]
        assert (
            set(methods) == {"noisy", "gaussian", "nl-means", "bm3d", "network", "wiener_oracle"} and r["n_images"] == 4
        )
        assert r["best_baseline"] != "wiener_oracle" and r["wiener_oracle_minus_best_baseline_dB"] is not None
        for name in ("gaussian", "nl-means", "bm3d"):  # every classical filter beats doing nothing on noisy fringes
            assert methods[name]["psnr_dB"] > methods["noisy"]["psnr_dB"]
        assert r["best_baseline"] in ("gaussian", "nl-means", "bm3d") and r["dose_e_per_A2"]["min"] > 0
        lo, hi = r["network_minus_best_baseline_dB_ci95"]
        assert lo <= r["network_minus_best_baseline_dB"] + 1e-9 and r["network_minus_best_baseline_dB"] <= hi + 1e-9
    assert sum(r["network_full_test"]["n_images"] for r in families.values()) == m["n_images"]
    assert m["network_full_test"]["n_images"] == m["n_images"] and m["comparison"]["gaussian_sigma_px"] > 0
    assert (report / "figures" / "denoise_examples.png").is_file()


def test_combined_accuracy_sums_log_probabilities():
    """Two unsure wrong images and one sure right one of structure "a" give "a" its class; "b" stays wrong."""
    probs = np.array([[0.4, 0.6], [0.45, 0.55], [0.95, 0.05], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([0, 0, 0, 0, 0])
    r = ev._combined(probs, y, np.array(["a", "a", "a", "b", "b"]), "by structure")
    assert r["accuracy"] == 0.5 and r["n_groups"] == 2 and r["images_per_group"] == 2.5


def test_averaged_regression_error_is_that_of_each_groups_mean_prediction():
    """Errors of opposite sign in one structure cancel when its images are averaged; a truth that
    differs within a group (a defocus) has no averaged figure."""
    pred, true = np.array([0.4, 0.6, 0.5, 0.9]), np.array([0.5, 0.5, 0.7, 0.7])
    sid = np.array(["a", "a", "b", "b"])
    r = ev._averaged(pred, true, sid, sid, "by structure")
    assert r["mae"] == pytest.approx(0.0) and r["n_groups"] == 2 and r["images_per_group"] == 2
    r = ev._averaged(np.array([0.4, 0.6, 0.9, 0.9]), true, sid, sid, "by structure")  # errors 0 and 0.2
    assert (
        r["mae"] == pytest.approx(0.1)
        and r["mae_ci95"][0] == pytest.approx(0)
        and r["mae_ci95"][1] == pytest.approx(0.2)
    )
    views = np.array(["a-v0", "a-v1", "b-v0", "b-v1"])  # per view: intervals still resample whole structures
    r = ev._averaged(np.array([0.4, 0.6, 0.9, 0.9]), true, views, sid, "by view")
    assert (
        r["n_groups"] == 4
        and r["mae"] == pytest.approx(0.15)
        and r["mae_ci95"] == [pytest.approx(0.1), pytest.approx(0.2)]
    )
    assert ev._averaged(pred, np.array([0.5, 0.6, 0.7, 0.7]), sid, sid, "x") is None


def test_structure_ci_resamples_whole_structures():
    """20 structures, 16 identical images each, half of them right: the interval is that of 20 draws
    (about ±0.22), not of 320 independent images (about ±0.055)."""
    sid = np.repeat(np.arange(20), 16)
    right = np.repeat(np.arange(20) % 2 == 0, 16)
    lo, hi = ev.structure_ci(right, sid)
    assert lo < 0.5 < hi and 0.3 < hi - lo < 0.55
    lo_i, hi_i = ev.structure_ci(right, np.arange(320))  # every image its own structure: the binomial width
    assert 0.08 < hi_i - lo_i < 0.14
    assert ev.structure_ci(right, sid) == [lo, hi]  # seeded: the same report from the same predictions
    lo_m, hi_m = ev.structure_ci(np.arange(320.0), sid, np.median)
    assert lo_m < 160 < hi_m


def test_wiener_oracle_is_the_linear_reference_on_a_gaussian_texture():
    """On an isotropic Gaussian texture (band-limited like a-C) the oracle Wiener filter beats every
    Gaussian filter width and the noisy input; without noise it gives the image back."""
    from hrtemflow.learn import baselines

    rng = np.random.default_rng(3)
    n = 64
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    ctf = np.sin(60 * k**2) * np.exp(-((k / 0.3) ** 2))  # rings, then an envelope: a Thon-ring spectrum
    scores = {"noisy": [], "oracle": [], "gauss": []}
    for _ in range(8):
        clean = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * ctf))
        noisy = clean + rng.normal(scale=2 * clean.std(), size=clean.shape)
        scores["noisy"].append(ev.psnr(noisy, clean))
        scores["oracle"].append(ev.psnr(baselines.wiener_oracle(noisy, clean), clean))
        scores["gauss"].append(max(ev.psnr(baselines.gaussian(noisy, s), clean) for s in baselines.GAUSSIAN_SIGMAS))
    mean = {name: np.mean(v) for name, v in scores.items()}
    assert mean["oracle"] > mean["gauss"] > mean["noisy"], mean
    np.testing.assert_allclose(baselines.wiener_oracle(clean, clean), clean, atol=1e-6 * np.abs(clean).max())


def test_denoiser_noise_free_target(root):
    """target noise_free: the feed serves the noise-free image (same optics), and the card says so."""
    spec = make_spec(root, "denoise", epochs=1, batch_size=8)
    spec["hyper"]["target"] = "noise_free"
    table, splits = prepare(spec, root)
    assert table.info["target"] == "noise_free"
    feed = ShardFeed(splits["train"], spec["image_size"], batch_size=4, cache_bytes=0)
    _, y = feed[0]
    g = zarr.open_group(table.paths[int(splits["train"].shard[0])], mode="r")
    want = normalise(g[f"s{spec['image_size']}/noise_free"][int(splits["train"].row[0])])
    np.testing.assert_allclose(y[0, ..., 0], want, rtol=1e-5, atol=1e-5)
    clean_spec = make_spec(root, "denoise", epochs=1, batch_size=8)
    assert prepare(clean_spec, root)[0].info["dataset_sha256"] != table.info["dataset_sha256"]
    out = root / "models" / "denoise-nf"
    card = tr.train(spec, out, base=root, progress=False)
    assert "noise-free" in card.output


def test_card_mismatch_and_missing_files_are_refused(chirality, root):
    _, out = chirality
    bad = root / "models" / "mismatch"
    shutil.copytree(out, bad, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint"))
    card = json.loads((bad / "card.json").read_text())
    (bad / "card.json").write_text(json.dumps({**card, "classes": card["classes"][:3]}))
    with pytest.raises(HrtemflowError, match="output"):
        load_bundle(bad)
    (bad / "card.json").write_text(json.dumps({**card, "input_size": 64}))
    with pytest.raises(HrtemflowError, match="input"):
        load_bundle(bad)
    (bad / "model.keras").unlink()
    with pytest.raises(HrtemflowError, match="model.keras is missing"):
        load_bundle(bad)


def test_evaluate_refuses_a_bundle_of_another_dataset(chirality, root):
    spec, out = chirality
    fewer = {**spec, "shards": [s for s in spec["shards"] if not s.endswith("s00001.zarr")]}
    with pytest.raises(HrtemflowError, match="different dataset"):
        ev.evaluate(fewer, out, root / "reports" / "x", base=root)


def test_cli_refuses_bad_input_before_training(root, capsys):
    spec = make_spec(root, "chirality")
    path = root / "plan" / "broken.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**spec, "shards": spec["shards"][:1]}))  # one structure group of 3: too few to split
    assert main(["train", str(path), "--out-dir", str(root / "models" / "broken"), "--base", str(root)]) == 2
    assert "too few structures" in capsys.readouterr().err
    assert not (root / "models" / "broken").exists()
    assert main(["train", str(root / "plan" / "none.json"), "--out-dir", str(root / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_feed_threads_default_to_the_jobs_threads(monkeypatch):
    """Snakemake sets OMP_NUM_THREADS to a rule's threads (SLURM: SLURM_CPUS_PER_TASK): the feed takes them
    unless --workers says otherwise, so the workflow's rule text need not change."""
    from hrtemflow.cli.commands.learn import feed_workers

    for var in ("HRTEMFLOW_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert feed_workers(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert feed_workers(None) == 8
    assert feed_workers(3) == 3
    with pytest.raises(HrtemflowError, match="--workers 0"):
        feed_workers(0)


def test_early_stopping_replay_decides_what_can_be_resumed():
    losses = [1.0, 0.8, 0.9, 0.95, 0.7, 0.75]
    assert tr._stop_epoch(losses, 3) is None
    assert tr._stop_epoch(losses, 2) == 4
    assert tr._stop_epoch([float("nan"), 1.0], 1) == 1


def test_temperature_fit_on_averaged_elements():
    """With (N, G, k) logits the temperature is fitted on the averaged softmaxes, as predict uses them."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=3000)
    base = rng.normal(size=(3000, 4))
    base[np.arange(3000), labels] += 2.0
    logits = 4.0 * (base[:, None, :] + 0.3 * rng.normal(size=(3000, 8, 4)))  # 8 noisy overconfident views
    t = ev.fit_temperature(logits, labels)
    assert t > 1.5  # overconfident by about 4x
    assert ev.nll(logits, labels, t) < ev.nll(logits, labels)
    np.testing.assert_allclose(ev.probabilities(logits).sum(axis=1), 1.0, rtol=1e-12)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    true_logits = rng.normal(scale=1.5, size=(n, k))
    p = softmax(true_logits)
    labels = np.array([rng.choice(k, p=row) for row in p])
    overconfident = 4.0 * true_logits  # right ranking, far too sure
    val, test = slice(0, n // 2), slice(n // 2, n)
    t = ev.fit_temperature(overconfident[val], labels[val])
    before, _ = ev.expected_calibration_error(softmax(overconfident[test]), labels[test])
    after, _ = ev.expected_calibration_error(softmax(overconfident[test] / t), labels[test])
    assert 3.0 < t < 5.0
    assert after <= before and after < 0.05 < before
    # a calibrated model keeps its ECE (T close to 1)
    t1 = ev.fit_temperature(true_logits[val], labels[val])
    assert 0.8 < t1 < 1.25


def test_mixed_precision_path_writes_a_float32_bundle(root, monkeypatch):
    """What a GPU run does (mixed_float16 training), exercised on CPU: the bundle comes out float32."""
    import keras

    monkeypatch.setattr(tr, "has_gpu", lambda: True)
    spec = make_spec(root, "chirality", epochs=1)
    out = root / "models" / "mixed"
    card = tr.train(spec, out, base=root, progress=False)
    assert card.mixed_precision is True and card.dtype_policy == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model, _ = load_bundle(out)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


def test_bfloat16_training_writes_a_float32_bundle(root, monkeypatch, capsys):
    """`precision: mixed_bfloat16` (CPUs with AMX) trains in bfloat16 and leaves a float32 bundle that
    loads anywhere; the card names the policy, the log says when the CPU has no AMX to make it pay,
    and a refused value names the setting."""
    import keras

    from hrtemflow.core import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))  # an AMD EPYC's
    spec = make_spec(root, "chirality", epochs=1)
    spec["hyper"]["precision"] = "mixed_bfloat16"
    out = root / "models" / "bfloat16"
    card = tr.train(spec, out, base=root, progress=False)
    assert card.dtype_policy == "mixed_bfloat16" and card.mixed_precision is True
    assert "without AMX" in capsys.readouterr().out
    assert np.isfinite(card.history["loss"]).all()
    assert keras.config.dtype_policy().name == "float32"
    model, _ = load_bundle(out)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    with pytest.raises(HrtemflowError, match="learning.tasks.<task>.precision"):
        tr.dtype_policy("float16")


def test_patchify_stem_trains_and_its_bundle_says_so(root):
    """`stem: patchify` builds the trunks on 2x2 patches; the card records the stem, the bundle loads
    in safe mode and evaluates; an unknown stem is refused before any data is opened."""
    spec = make_spec(root, "structure", epochs=1)
    spec["hyper"]["stem"] = "patchify"
    out = root / "models" / "structure-patchify"
    card = tr.train(spec, out, base=root, progress=False)
    assert card.hyper["stem"] == "patchify" and np.isfinite(card.history["loss"]).all()
    model, _ = load_bundle(out)
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first.strides == (2, 2) and first.kernel_size == (2, 2)
    m = ev.evaluate(spec, out, root / "reports" / "structure-patchify", base=root)
    co = m["targets"]["co_fraction"]
    assert (
        co["mae"] >= 0
        and co["per_structure"]["n_groups"] == m["n_structures"]
        and co["per_view"]["images_per_group"] == 4
    )
    bad = {**spec, "hyper": {**spec["hyper"], "stem": "strided"}, "shards": ["nowhere.zarr"]}
    with pytest.raises(
        HrtemflowError, match="stem 'strided' is not one of full, patchify; fix learning.tasks.structure.stem"
    ):
        tr.train(bad, root / "models" / "bad-stem", base=root, progress=False)
    assert not (root / "models" / "bad-stem").exists()


def test_fresh_shot_noise_trains_and_the_card_says_so(root):
    """`shot_noise: fresh` trains the denoiser on new noise each epoch (the target as stored) and the
    card's augmentation says so; validation keeps the stored images, so its loss is comparable."""
    spec = make_spec(root, "denoise", epochs=2, shot_noise="fresh")
    out = root / "models" / "denoise-fresh"
    card = tr.train(spec, out, base=root, progress=False)
    assert "new Poisson noise" in card.augmentation["shot_noise"] and card.hyper["shot_noise"] == "fresh"
    assert len(card.history["val_loss"]) == 2 and np.isfinite(card.history["val_loss"]).all()
    assert tr._augmentation_card("denoise", False, "stored") is None  # nothing augmented: the card says none


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    from hrtemflow.core.runtime import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n"
    )
    assert cpu_flags(str(info)) == {"fpu", "avx512f", "amx_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) is None


def test_streamed_training_with_reading_threads_after_zarrs_reads(root):
    """`--workers 2` on a split too big for the cache, in a process that has already read through
    zarrs from 2 threads: training finishes. Forked reader processes hung forever there (Keras'
    process workers after threaded zarrs reads, seen 2026-11); the feed's workers are threads."""
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip(
        "zarrs", reason="zarrs (the fast reader) is not installed: pip install --only-binary=:all: zarrs"
    )
    spec = make_spec(root, "chirality", epochs=2, batch_size=8)
    path = root / "plan" / "chirality-threads.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    out = root / "models" / "chirality-threads"
    code = f"""
import json, sys, keras
from hrtemflow.cli import main
from hrtemflow.learn.feed import ShardFeed
from hrtemflow.learn.table import load_table, split_table
spec = json.load(open({str(path)!r}))
val = split_table(load_table(spec, {str(root)!r}), spec["split"])["val"]
feed = ShardFeed(val, spec["image_size"], batch_size=8, cache_bytes=0, workers=2)
assert feed.reader == "zarrs", feed.reader
keras.Sequential([keras.Input((spec["image_size"],) * 2 + (1,)), keras.layers.Flatten()]).predict(feed, verbose=0)
args = ["train", {str(path)!r}, "--out-dir", {str(out)!r}, "--base", {str(root)!r}, "--quiet", "--workers", "2"]
sys.exit(main(args))
"""
    env = {**os.environ, "HRTEMFLOW_FEED_CACHE_MB": "0", "HRTEMFLOW_FEED_READER": "zarrs"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # its own process group: a hang leaves no orphans
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        pytest.fail(f"streamed training with 2 reading workers hung after zarrs reads; its output: {stdout[-1500:]}")
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert "train and val streamed from the shards (zarrs reader, 2 reading thread(s))" in stdout
    assert json.loads((out / "card.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize(
    ("backend", "task"),
    [
        ("jax", "aberrations"),
        ("jax", "denoise"),
        ("torch", "chirality"),
        ("torch", "aberrations"),
        ("torch", "denoise"),
    ],
)
def test_train_and_evaluate_under_other_backends(root, backend, task):
    """The whole training path (feed, checkpoints, bundle, OOD fit, evaluation) under KERAS_BACKEND=jax
    or torch; the bundle then loads and predicts the same under TensorFlow, as a CPU-only apply host
    would. torch is not a test dependency (PyPI's wheel carries 4 GB of CUDA libraries): install it to
    run those cases."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (jax comes with pip install -e .[test]; torch: pip install torch)")
    spec = make_spec(root, task, epochs=2, batch_size=8)
    path = root / "plan" / f"{task}-{backend}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    out, report = root / "models" / f"{task}-{backend}", root / "reports" / f"{task}-{backend}"
    code = (
        "import sys; from hrtemflow.cli import main; "
        f"sys.exit(main(['train', {str(path)!r}, '--out-dir', {str(out)!r}, '--base', {str(root)!r}, '--quiet']) or "
        f"main(['evaluate', {str(path)!r}, '--model-dir', {str(out)!r}, '--out-dir', {str(report)!r}, '--base', "
        f"{str(root)!r}]))"
    )
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["backend"] == backend and metrics["n_images"] > 0
    card = json.loads((out / "card.json").read_text())
    assert card["versions"]["keras_backend"] == backend
    model, card = load_bundle(out)  # TensorFlow here, and torch's optimizer classes must not be needed
    assert getattr(model, "optimizer", None) is None  # the bundle is for inference: no backend-specific optimizer saved
    x = np.random.default_rng(0).normal(size=(2, spec["image_size"], spec["image_size"], 1)).astype("float32")
    assert np.isfinite(np.asarray(model.predict(x, verbose=0))).all()
