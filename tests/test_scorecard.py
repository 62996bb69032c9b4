"""Scorecard: every own-paper number is listed with the reproduced value, delta, status and run."""

import csv
import io

from d2o import scorecard
from d2o.literature import load_literature

LIT = load_literature()
PAPER, DEMO = "paper protocol", "demo features, not comparable with the paper"
# Own-method numbers in the paper: Tab 1 (5), Tab 2 (5), Tab 3 (4 FIDs + 4 shares), Tab 4 (6), Tab 5 (4), Tab 6 (6),
# Tab 11 (12), Tab 12 (3), text (0.2 Mimg 3.62 / 4.12, vs-EDM 1.87, teacher-student 1.78, teachers <= 2.2),
# Figs 8-21 captions (10).
N_OWN = 5 + 5 + 8 + 6 + 4 + 6 + 12 + 3 + 5 + 10


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_lists_every_own_number():
    assert len(LIT.own_results) == N_OWN
    md, text = scorecard.build(LIT, {}, PAPER)
    rs = _csv(text)
    own = [r for r in rs if r["kind"] == "own"]
    assert len(own) == N_OWN and all(r["status"] == "not run" and r["reproduced"] == "not run" for r in own)
    assert {r["id"] for r in own} == {e["id"] for e in LIT.own_results}
    assert f"{N_OWN} numbers reported by the paper" in md and PAPER in md
    base = {r["id"] for r in rs if r["kind"] == "baseline"}
    assert {"table4/edm_uncond/fid", "table6/edm_imagenet/fid", "fig7_21/imagenet_edm/fid", "text_5.2/cd/fid_vs_edm_samples"} <= base
    for v in ("3.62", "4.12", "1.87", "1.78", "<= 2.2", "~6", "collapse"):
        assert any(r["paper"] == v for r in own), v


def test_statuses_delta_and_experiment():
    computed = {("table4", "d2o_uncond", "fid"): (1.70, "cifar_uncond_d2o"),
                ("table4", "d2o_f_uncond", "fid"): (1.90, "cifar_uncond_d2o_f"),
                ("table1", "stylegan2_scratch", "fid"): (150.0, "d_sg2"),
                ("table1", "vgg16", "fid"): ("collapse", "d_vgg"),
                ("text", "teachers_vs_dataset_max", "fid"): (2.05, "teachers")}
    rs = {r["id"]: r for r in _csv(scorecard.build(LIT, computed, PAPER)[1])}
    r = rs["table4/d2o_uncond/fid"]
    assert (r["status"], r["delta"], r["experiment"], r["reproduced"]) == ("reproduced", "+0.04", "cifar_uncond_d2o", "1.7")
    assert rs["fig7_21/cifar10_uncond_d2o/fid"]["status"] == "reproduced"      # measured_as the Table 4 cell
    assert rs["table4/d2o_f_uncond/fid"]["status"] == "differs"
    assert rs["table1/stylegan2_scratch/fid"]["status"] == "reproduced"        # FID >= 50 counts as collapse
    assert rs["table1/vgg16/fid"]["status"] == "differs"
    assert rs["text/teachers_vs_dataset_max/fid"]["status"] == "reproduced"    # "<=" bound
    assert rs["table5/d2o_ffhq/fid"]["status"] == "not run"
    tight = {r["id"]: r for r in _csv(scorecard.build(LIT, computed, PAPER, rel_tol=0.0, abs_tol=0.01)[1])}
    assert tight["table4/d2o_uncond/fid"]["status"] == "differs"


def test_demo_label_is_not_comparable():
    md, text = scorecard.build(LIT, {("table4", "d2o_uncond", "fid"): (25.0, "demo_d2o")}, DEMO)
    rs = {r["id"]: r for r in _csv(text)}
    assert rs["table4/d2o_uncond/fid"]["status"] == "demo (not comparable)"
    assert all(r["label"] == DEMO for r in rs.values()) and DEMO in md


def test_own_list_input_and_write(tmp_path):
    md, text = scorecard.build(LIT.own_results, {}, PAPER)
    assert len(_csv(text)) == N_OWN
    scorecard.write(LIT, {}, PAPER, tmp_path / "s.md", tmp_path / "s.csv")
    assert (tmp_path / "s.md").read_text().startswith("# D2O reproduction scorecard")


def test_each_number_names_the_model_and_code_that_made_it(tmp_path):
    """made_by comes from the metric file: the model identity and the git commit of its provenance."""
    import json

    from d2o import report

    m = tmp_path / "run-x" / "metrics"
    m.mkdir(parents=True)
    (m / "fid.json").write_text(json.dumps({"value": 1.7, "label": PAPER, "model_identity": "abc123",
                                            "provenance": {"code": {"commit": "0123456789abcdef", "dirty": True}}}))
    computed = report.scorecard_values(tmp_path, {"table4": {"d2o_uncond": "run-x"}})
    assert computed[("table4", "d2o_uncond", "fid")] == (1.7, "run-x", "abc123 @ 0123456789+dirty", "")
    row = next(r for r in _csv(scorecard.build(LIT, computed, PAPER)[1]) if r["id"] == "table4/d2o_uncond/fid")
    assert row["made_by"] == "abc123 @ 0123456789+dirty" and row["reproduced"] == "1.7"


def test_collect_reads_what_a_run_trained(tmp_path):
    """Table 3's 'Tunable params' cell: the run's trainable share from train.json."""
    import json

    from d2o import report

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "train.json").write_text(json.dumps({"training_mimg": 5.0, "params_m": 56.4, "shares": {
        "norm": 7.8, "conv": 85.5, "qkv": 2.1, "skip": 4.0, "other": 0.6, "trainable_percent": 15.6}}))
    got = report.collect(tmp_path, "r")
    assert got["trainable_percent"] == 15.6 and got["training_mimg"] == 5.0


def _run_with_best(root, name="run-x"):
    """A run's artefacts as the DAG writes them, its lowest-FID snapshot (at 0.5 Mimg) evaluated under best/."""
    import json

    from d2o import report

    (root / name / "snapshots").mkdir(parents=True)
    for k in (250, 500, 750):
        (root / name / "snapshots" / f"snapshot-{k:06d}.safetensors").write_bytes(b"x")
    curve = {"experiment": name, "points": [[0.25, 3.0], [0.5, 1.9], [0.75, 2.1]], "label": PAPER}
    choice = report.best_snapshot(curve, root / name / "snapshots")
    assert (choice["kimg"], choice["snapshot_fid"]) == (500, 1.9) and choice["path"].endswith("snapshot-000500.safetensors")
    (root / name / "best" / "metrics").mkdir(parents=True)
    (root / name / "best" / "snapshot.json").write_text(json.dumps(choice))
    (root / name / "best" / "metrics" / "fid.json").write_text(json.dumps({"value": 1.6, "label": PAPER}))
    (root / name / "metrics").mkdir(parents=True)
    (root / name / "metrics" / "fid.json").write_text(json.dumps({"value": 1.7, "label": PAPER}))


def test_best_snapshot_beside_the_final_model(tmp_path):
    """Tables and the scorecard show the final model and the lowest-FID snapshot, labelled, with its Mimg."""
    from d2o import report, tables

    _run_with_best(tmp_path)
    data = report.collect_slots(tmp_path, {"d2o_uncond": "run-x"})
    assert data["d2o_uncond"]["fid"] == 1.7 and data["d2o_uncond"]["best"]["fid"] == 1.6
    assert data["d2o_uncond"]["best"]["training_mimg"] == 0.5
    _, md = tables.make_table("table4", data, LIT, PAPER)
    final = next(l for l in md.splitlines() if l.startswith("| D2O (ours) "))
    best = next(l for l in md.splitlines() if f"D2O (ours), {tables.BEST}" in l)
    assert "1.70 (paper 1.66)" in final and "1.60 (paper 1.66)" in best
    assert "run-x at 0.500 Mimg (snapshot FID 1.90)" in md
    computed = report.scorecard_values(tmp_path, {"table4": {"d2o_uncond": "run-x"}})
    row = next(r for r in _csv(scorecard.build(LIT, computed, PAPER)[1]) if r["id"] == "table4/d2o_uncond/fid")
    assert row["reproduced"] == "1.7" and row["best_snapshot"] == "1.6 @ 0.5 Mimg"


def test_best_snapshot_needs_a_curve(tmp_path):
    import pytest

    from d2o import report

    with pytest.raises(ValueError, match="no points"):
        report.best_snapshot({"experiment": "x", "points": []}, tmp_path)
    with pytest.raises(FileNotFoundError, match="snapshot-000200.safetensors"):
        report.best_snapshot({"experiment": "x", "points": [[0.2, 3.0]]}, tmp_path)
