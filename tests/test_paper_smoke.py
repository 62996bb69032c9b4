"""The PAPER registry end to end at smoke scale (config/smoke.yaml), as on a cluster whose compute nodes have no
internet: every external file is a `file://` fixture in its upstream format (tests/smoke_fixtures.py: the real
architectures, random weights), fetched by tools/prefetch.py before the run, and every process of the run (Snakemake
and its jobs) has the network blocked. The real NCSN++ 32 / NCSN++ 64 / ADM generators train through G, D and R1
steps against the real VGG16-BN / DeiT-B + EfficientNet-Lite0 discriminators at 224 px (ImageNet: conditional heads
from the class embedding), the Table 1 VGG16 / LPIPS / StyleGAN2 rows and a CD-F run train, samples are scored with
the real Inception and CLIP, and Tables 10 and 12 are rendered. Slow (CI runs it): ~12 minutes on 2 cores."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import smoke_fixtures

REPO = Path(__file__).resolve().parents[1]
R = "results/smoke"
RUNS = {  # experiment -> metrics it is scored with here (each kind once at least; Table 12 needs all of ImageNet's)
    "cifar10-uncond-d2o": ("fid", "is"),                                  # VGG16-BN + EfficientNet, NCSN++ 32
    "cifar10-cond-d2o-f": ("fid",),                                       # conditional heads, class embedding, D2O-F
    "afhqv2-d2o": ("fid",),                                               # NCSN++ 64, DeiT-B + EfficientNet
    "imagenet64-d2o-f": ("fid", "fid_dataset", "pr", "clip_fid"),         # ADM, 1000 classes, class embedding
    "cifar10-uncond-cd-f": ("fid",),                                      # CD-F: LPIPS (VGG16), the EDM teacher
}
TABLE1 = ("cifar10-uncond-d-vgg16", "cifar10-uncond-d-lpips", "cifar10-uncond-d-sg2-pretrained")  # trained only
FIXTURES = ("vgg16_bn", "vgg16", "tf_efficientnet_lite0", "deit_base_distilled_patch16_224", "inception-v3-compat",
            "clip-vit-b-32", "in-embedding-tf-efficientnet-lite0", "edm-cifar10-uncond", "edm-cifar10-cond",
            "edm-afhqv2", "edm-imagenet", "stylegan2ada-cifar10", "cifar10", "afhqv2", "imagenet64",
            "fid-refs/cifar10", "fid-refs/afhqv2", "fid-refs/imagenet64", "pr-refs/imagenet64")
# Blocks every socket but Unix ones in Snakemake and in every Python process it starts (PYTHONPATH is inherited):
# a job that tried to fetch anything would fail.
NETBLOCK = textwrap.dedent('''
    import socket
    def _refuse(self, *args, **kwargs):
        if self.family != socket.AF_UNIX:
            raise OSError("network blocked by tests/test_paper_smoke.py")
        return _connect(self, *args, **kwargs)
    _connect = socket.socket.connect
    socket.socket.connect = socket.socket.connect_ex = _refuse
    def _no_dns(*args, **kwargs):
        raise OSError("network blocked by tests/test_paper_smoke.py")
    socket.getaddrinfo = socket.gethostbyname = _no_dns
''')


def _overlay(fx: dict, staged: Path) -> dict:
    """The fixtures as the registry's files: file:// URLs and their SHA-256 where the registry pins one; the manual
    datasets point at the fixture folders; the class embedding is put into place by hand (its url unreachable)."""
    url = {k: v["path"].as_uri() for k, v in fx.items()}
    sha = {k: v["sha256"] for k, v in fx.items()}
    return {
        "datasets": {
            "cifar10": {"expected": {"images": 100, "classes": 10}, "source": {"url": url["cifar10"], "sha256": sha["cifar10"]},
                        "fid_ref": {"url": url["fid-refs/cifar10"]}},
            "afhqv2": {"expected": {"images": 18}, "source": {"path": str(fx["afhqv2"]["path"])},
                       "fid_ref": {"url": url["fid-refs/afhqv2"]}},
            "imagenet64": {"expected": {"images": 12, "classes": 3}, "source": {"path": str(fx["imagenet64"]["path"])},
                           "fid_ref": {"url": url["fid-refs/imagenet64"]}, "pr_ref": {"url": url["pr-refs/imagenet64"]}},
        },
        "checkpoints": {k: {"url": url[k]} for k in ("edm-cifar10-uncond", "edm-cifar10-cond", "edm-afhqv2",
                                                      "edm-imagenet", "stylegan2ada-cifar10")},
        "weights": {**{k: {"url": url[k]} for k in ("vgg16_bn", "vgg16", "tf_efficientnet_lite0",
                                                     "deit_base_distilled_patch16_224", "inception-v3-compat")},
                    "clip-vit-b-32": {"url": url["clip-vit-b-32"], "sha256": sha["clip-vit-b-32"]},
                    "in-embedding-tf-efficientnet-lite0": {"url": "https://unreachable.invalid/emb.pkl",
                                                           "sha256": sha["in-embedding-tf-efficientnet-lite0"]}},
    }


def _targets():
    out = [f"{R}/tables/table10.tex", f"{R}/tables/table10.md", f"{R}/tables/table12.tex", f"{R}/tables/table12.md"]
    return out + [f"{R}/{e}/metrics/{m}.json" for e, ms in RUNS.items() for m in ms] + [f"{R}/{e}/train.json" for e in TABLE1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    work, fxdir, block = root / "work", root / "fixtures", root / "netblock"
    t0 = time.time()
    fx = smoke_fixtures.write_all(fxdir, FIXTURES)
    t_fixtures = time.time() - t0
    staged = work / "resources/downloads/weights/in-embedding-tf-efficientnet-lite0"   # put into place by hand
    staged.parent.mkdir(parents=True)
    staged.write_bytes(fx["in-embedding-tf-efficientnet-lite0"]["path"].read_bytes())
    (work / "fixtures.yaml").write_text(yaml.safe_dump(_overlay(fx, staged)))
    block.mkdir()
    (block / "sitecustomize.py").write_text(NETBLOCK)
    env = {**os.environ, "PYTHONPATH": str(block), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    configs = ["--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/smoke.yaml"), str(work / "fixtures.yaml")]
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *configs]
    t0 = time.time()
    prefetch = subprocess.run([sys.executable, str(REPO / "tools/prefetch.py"), *_targets(), "--", *common], cwd=work,
                              env=env, capture_output=True, text=True, timeout=900)
    assert prefetch.returncode == 0, prefetch.stdout[-3000:] + prefetch.stderr[-3000:]
    t_prefetch = time.time() - t0
    for f in fx.values():  # the downloaded files are in resources/ now (3.8 GB less on the disk); manual folders stay
        if f["path"].is_file():
            f["path"].unlink()
    t0 = time.time()
    run = subprocess.run(["snakemake", *_targets(), *common, "--cores", "2", "--keep-going"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=2400)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    print(f"smoke: fixtures {t_fixtures:.0f} s, prefetch {t_prefetch:.0f} s, DAG {time.time() - t0:.0f} s, "
          f"{sum(f.stat().st_size for f in work.rglob('*') if f.is_file()) / 2**30:.1f} GiB on disk")
    yield dict(work=work, fx=fx, prefetch=prefetch.stdout, log=log, env=env, common=common)
    shutil.rmtree(root, ignore_errors=True)  # ~9 GiB of checkpoints and weights: not kept for later tests


def _json(smoke, path):
    return json.loads((smoke["work"] / R / path).read_text())


@pytest.mark.slow
def test_prefetch_fetched_every_download_first(smoke):
    """tools/prefetch.py listed every download with its size and fetched them; the class embedding, in place
    already, was not downloaded (its url is unreachable) and was verified where it was read."""
    plan = smoke["prefetch"]
    assert "resources/downloads/weights/deit_base_distilled_patch16_224" in plan and "to download: " in plan
    assert "in-embedding" not in plan.split("to download")[0]
    assert "download_weight" not in smoke["log"] and "download_checkpoint" not in smoke["log"]  # all done before


@pytest.mark.slow
def test_every_run_trained_from_the_registry_weights(smoke):
    fx = smoke["fx"]
    reads = {"cifar10-uncond-d2o": ("vgg16_bn", "tf_efficientnet_lite0"),
             "cifar10-cond-d2o-f": ("vgg16_bn", "tf_efficientnet_lite0", "in-embedding-tf-efficientnet-lite0"),
             "afhqv2-d2o": ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0"),
             "imagenet64-d2o-f": ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0",
                                  "in-embedding-tf-efficientnet-lite0"),
             "cifar10-uncond-cd-f": ("vgg16",), "cifar10-uncond-d-vgg16": ("vgg16",),
             "cifar10-uncond-d-lpips": ("vgg16",), "cifar10-uncond-d-sg2-pretrained": ()}
    for name, weights in reads.items():
        tj = _json(smoke, f"{name}/train.json")
        assert tj["iterations"] == 3 and tj["weights"] == {w: fx[w]["sha256"] for w in weights}, name
    assert _json(smoke, "imagenet64-d2o-f/train.json")["class_embedding"]["weights"] == "in-embedding-tf-efficientnet-lite0"
    assert _json(smoke, "cifar10-uncond-d-sg2-pretrained/train.json")["discriminator_init"]["checkpoint"] == "stylegan2ada-cifar10"
    assert _json(smoke, "imagenet64-d2o-f/train.json")["freeze"]["tensors"] > 0
    stats = [json.loads(l) for l in (smoke["work"] / R / "afhqv2-d2o/runs").glob("*/stats.jsonl").__next__().read_text().splitlines()]
    assert any("loss_r1" in s for s in stats)                                    # an R1 step through DeiT-B
    assert not list((smoke["work"] / R).glob("*/runs/*/training-state.pt"))   # keep_state: false (config/smoke.yaml)


@pytest.mark.slow
def test_metrics_used_the_real_extractors_and_say_smoke(smoke):
    fx = smoke["fx"]
    for name, ms in RUNS.items():
        for m in ms:
            r = _json(smoke, f"{name}/metrics/{m}.json")
            extractor = "clip-vit-b-32" if m == "clip_fid" else "inception-v3-compat"
            assert r["label"].startswith("smoke run") and r["weights"] == {extractor: fx[extractor]["sha256"]}, (name, m)
            assert r["num_samples"] == 16 or m == "pr"
    t10 = (smoke["work"] / R / "tables/table10.md").read_text()
    assert "(paper" in t10 and "smoke run" in t10
    assert "smoke run" in (smoke["work"] / R / "tables/table12.md").read_text()


@pytest.mark.slow
def test_a_job_asked_for_an_unstaged_weight_fails_naming_the_registry_key(smoke):
    """train.py for a paper experiment without the weights its D reads: refused at once, naming the key to add."""
    w = smoke["work"]
    out = subprocess.run([sys.executable, str(REPO / "workflow/scripts/train.py"),
                          "--training", f"{R}/cifar10-uncond-d2o/settings/training.json",
                          "--execution", f"{R}/cifar10-uncond-d2o/settings/execution.json",
                          "--dataset", "resources/datasets/cifar10.zip",
                          "--init", f"{R}/checkpoints/edm-cifar10-uncond.safetensors",
                          "--runs-dir", str(w / "runs-x"), "--output", str(w / "x/model.safetensors"),
                          "--snapshots", str(w / "x/snapshots")], cwd=w, env=smoke["env"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode != 0 and "add `weights.vgg16_bn`" in out.stderr
