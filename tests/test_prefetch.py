"""tools/prefetch.py: the downloads a target needs, with their sizes, before anything is submitted."""
import subprocess
import sys
from pathlib import Path

from d2o.config import load_config
from d2o.download import write_lock_entry
from d2o.prefetch import DOWNLOAD_RULES, format_plan, plan, registry_downloads

REPO = Path(__file__).resolve().parents[1]


def test_the_plan_covers_every_download_job_of_the_paper_dag():
    """registry_downloads writes the same paths as the download rules: every download job of `all` is in it."""
    out = subprocess.run([str(Path(sys.executable).with_name("python")), "tools/prefetch.py", "all", "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    table = registry_downloads(load_config(REPO / "config/config.yaml"))
    listed = [line.split()[1] for line in out.stdout.splitlines()[1:-1]]
    assert set(listed) <= set(table) and len(listed) == 19  # 6 checkpoints, CIFAR-10, 5 references, 7 weights
    assert {"resources/downloads/weights/deit_base_distilled_patch16_224", "resources/checkpoints/edm-imagenet.pkl",
            "resources/pr-refs/imagenet64.npz", "resources/downloads/cifar10/cifar-10-python.tar.gz"} <= set(listed)
    assert out.stdout.splitlines()[-1].startswith(f"to download: {len(listed)} files")
    assert set(DOWNLOAD_RULES) == {"download_checkpoint", "download_dataset_source", "download_reference", "download_weight"}


def test_sizes_come_from_the_lock_file_or_the_server(tmp_path):
    cfg = load_config(REPO / "config/config.yaml")
    (tmp_path / "vgg.pth").write_bytes(b"x" * 3000)
    cfg["weights"]["vgg16_bn"]["url"] = (tmp_path / "vgg.pth").as_uri()
    write_lock_entry(tmp_path / "lock.yaml", "weights:vgg16", {"sha256": "0" * 64, "size": 5 * 2**20})
    rows = plan(cfg, ["resources/downloads/weights/vgg16_bn", "resources/downloads/weights/vgg16"],
                tmp_path / "lock.yaml", ask_servers=False)
    assert [r["size"] for r in rows] == [None, 5 * 2**20]          # no server asked: the lock file's record only
    rows = plan(cfg, ["resources/downloads/weights/vgg16_bn", "resources/downloads/weights/vgg16"], tmp_path / "lock.yaml")
    assert [r["size"] for r in rows] == [3000, 5 * 2**20]           # file:// answers with the file's size
    assert format_plan(rows).splitlines()[-1] == "to download: 2 files, 5.0 MiB"
