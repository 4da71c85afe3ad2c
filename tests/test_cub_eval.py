"""CUBDataset, scripts/train_classifier.py and scripts/eval_classification.py (Table 2 tools)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffsr.archs.aodnet_arch import AODNet
from diffsr.archs.resnet_arch import ResNet50
from diffsr.data import build_dataset
from diffsr.data.cub_dataset import eval_view, random_resized_crop, read_cub_metadata
from diffsr.models.checkpoint import save_network
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
IMAGE_SIZE = 32
RESIZE = round(IMAGE_SIZE * 256 / 224)  # 37: the documented test resize


train_classifier = load_script("train_classifier")
eval_classification = load_script("eval_classification")
degrade_dataset = load_script("degrade_dataset")


def make_cub(root: Path, per_class: int = 4, size: tuple[int, int] = (40, 48)) -> dict[str, int]:
    """A CUB-layout set: 3 classes x ``per_class`` JPEGs; the first half of each class is train.

    Returns image path (relative to images/, no extension) -> 0-based label.
    """
    rng = np.random.default_rng(0)
    labels, lines = {}, {"images": [], "labels": [], "split": []}
    image_id = 0
    for class_index, class_name in enumerate(CLASSES):
        folder = root / "images" / class_name
        folder.mkdir(parents=True)
        for k in range(per_class):
            image_id += 1
            name = f"{class_name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            base = np.zeros((*size, 3)) + 60 * class_index
            img = np.clip(base + rng.uniform(0, 120, (*size, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / name), img)
            lines["images"].append(f"{image_id} {class_name}/{name}")
            lines["labels"].append(f"{image_id} {class_index + 1}")
            lines["split"].append(f"{image_id} {int(k < per_class // 2)}")
            labels[f"{class_name}/{Path(name).stem}"] = class_index
    (root / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    return labels


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def own_view(rgb: np.ndarray) -> torch.Tensor:
    """The documented evaluation view, written here: shorter side to 37 (area), centre 32."""
    h, w = rgb.shape[:2]
    scale = RESIZE / min(h, w)
    resized = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    top, left = (resized.shape[0] - IMAGE_SIZE) // 2, (resized.shape[1] - IMAGE_SIZE) // 2
    crop = resized[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[None]


def read_rgb01(path: Path) -> np.ndarray:
    return cv2.imread(str(path))[:, :, ::-1].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Clean CUB set and a random-init ResNet-50 fine-tuned on it for 2 epochs."""
    root = tmp_path_factory.mktemp("cub")
    labels = make_cub(root / "CUB")
    out = root / "resnet"
    code = train_classifier.main(
        ["--data", str(root / "CUB"), "--arch", "resnet50", "--allow-random-init",
         "--image-size", str(IMAGE_SIZE), "--epochs", "2", "--batch-size", "3", "--workers", "0",
         "--lr", "0.01", "--out", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    return root, labels, out


def load_resnet(path: Path) -> ResNet50:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = ResNet50(num_classes=len(CLASSES))
    net.load_state_dict(state["params"])
    return net.eval()


# ----------------------------------------------------------------------------- dataset
def test_cub_metadata_labels_and_splits(tmp_path):
    labels = make_cub(tmp_path)
    meta = read_cub_metadata(tmp_path)
    assert meta.class_names == list(CLASSES)
    assert [Path(p).stem for p in meta.paths] == [Path(k).name for k in labels]
    assert meta.labels == list(labels.values())
    assert len(meta.indices("train")) == len(meta.indices("test")) == 6
    test = build_dataset({"type": "CUBDataset", "phase": "test", "dataroot": str(tmp_path),
                          "image_size": IMAGE_SIZE})  # fmt: skip
    sample = test[0]
    assert sample["img"].shape == (3, IMAGE_SIZE, IMAGE_SIZE) and sample["label"] == 0
    rgb = read_rgb01(Path(sample["img_path"]))
    torch.testing.assert_close(sample["img"][None], own_view(rgb), atol=1e-6, rtol=0)
    whole = build_dataset({"type": "CUBDataset", "phase": "test", "dataroot": str(tmp_path),
                           "image_size": None, "split": "all"})  # fmt: skip
    assert len(whole) == 12 and whole[5]["img"].shape == (3, 40, 48)
    assert whole.labels == list(labels.values())


def test_cub_errors_name_the_file(tmp_path):
    make_cub(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing classes\.txt"):
        read_cub_metadata(tmp_path)
    make_cub(tmp_path / "b")
    (tmp_path / "b" / "image_class_labels.txt").write_text("1 1\n2 x\n")
    with pytest.raises(ValueError, match=r"image_class_labels.txt, line 2"):
        read_cub_metadata(tmp_path / "b")
    with pytest.raises(ValueError, match="unknown option 'image_szie'"):
        build_dataset({"type": "CUBDataset", "phase": "test", "dataroot": str(tmp_path),
                       "image_szie": 32})  # fmt: skip


def test_classification_views():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (RESIZE, 50, 3)).astype(np.float32)  # shorter side = resize size
    left = (50 - IMAGE_SIZE) // 2
    top = (RESIZE - IMAGE_SIZE) // 2
    np.testing.assert_array_equal(
        eval_view(img, IMAGE_SIZE), img[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]
    )
    whole = random_resized_crop(img, 16, np.random.default_rng(1), (1, 1), (50 / RESIZE,) * 2)
    np.testing.assert_allclose(whole, cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA))
    first = random_resized_crop(img, 16, np.random.default_rng(5))
    assert first.shape == (16, 16, 3)
    assert np.array_equal(first, random_resized_crop(img, 16, np.random.default_rng(5)))
    assert not np.array_equal(first, random_resized_crop(img, 16, np.random.default_rng(6)))


# ----------------------------------------------------------------------------- training
def test_training_writes_a_classifier_and_its_test_accuracy(trained):
    root, labels, out = trained
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log[:-1]] == [1, 2] and log[0]["lr"] == pytest.approx(0.01)
    assert log[1]["lr"] == pytest.approx(0.005)  # cosine at epoch 2 of 2
    net = load_resnet(out / "classifier.pth")
    correct = 0
    test_images = [k for i, k in enumerate(labels) if i % 4 >= 2]
    with torch.no_grad():
        for key in test_images:
            rgb = read_rgb01(root / "CUB" / "images" / f"{key}.jpg")
            correct += int(net(own_view(rgb)).argmax(1).item() == labels[key])
    assert log[-1]["test_images"] == 6
    assert log[-1]["test_top1"] == pytest.approx(100.0 * correct / 6)
    state = torch.load(out / "classifier.pth", weights_only=True)
    assert state["arch"] == {"type": "ResNet50", "num_classes": 3}
    assert (state["image_size"], state["resize_size"]) == (IMAGE_SIZE, RESIZE)


def test_resume_after_an_interruption_gives_the_same_weights(trained, tmp_path, monkeypatch):
    root, _, uninterrupted = trained
    args = ["--data", str(root / "CUB"), "--arch", "resnet50", "--allow-random-init",
            "--image-size", str(IMAGE_SIZE), "--epochs", "2", "--batch-size", "3",
            "--workers", "0", "--lr", "0.01", "--out", str(tmp_path / "run"), "--device", "cpu",
            "--no-test"]  # fmt: skip
    real_epoch = train_classifier.train_one_epoch
    calls = []

    def interrupted_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*a, **k)

    monkeypatch.setattr(train_classifier, "train_one_epoch", interrupted_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_classifier.main(args)
    monkeypatch.setattr(train_classifier, "train_one_epoch", real_epoch)
    assert train_classifier.main(args) == 2  # last.pth exists: needs --resume
    assert train_classifier.main([*args, "--resume"]) == 0
    expected = torch.load(uninterrupted / "classifier.pth", weights_only=True)["params"]
    resumed = torch.load(tmp_path / "run" / "classifier.pth", weights_only=True)["params"]
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_training_needs_weights_or_an_explicit_random_init(tmp_path, capsys):
    make_cub(tmp_path / "CUB")
    code = train_classifier.main(["--data", str(tmp_path / "CUB"), "--out", str(tmp_path / "o")])
    assert code == 2 and "--weights" in capsys.readouterr().err
    code = train_classifier.main(
        ["--data", str(tmp_path / "CUB"), "--out", str(tmp_path / "o"), "--weights",
         str(tmp_path / "resnet50-0676ba61.pth")]
    )  # fmt: skip
    assert code == 2 and "resnet50-0676ba61.pth: no such file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation
def test_eval_classification_counts_match_an_independent_count(trained, tmp_path, capsys):
    root, labels, classifier_dir = trained
    degraded = tmp_path / "CUB_lowlight5"
    assert degrade_dataset.main(
        [str(root / "CUB"), "--kind", "lowlight", "--severity", "5", "--out", str(degraded)]
    ) == 0  # fmt: skip
    broken = next((degraded / "images" / CLASSES[2]).glob("*_0003_*.jpg"))  # a test image
    broken.write_bytes(b"\xff\xd8 truncated")
    nets = {}
    for seed, name in enumerate(("without", "with")):
        torch.manual_seed(seed)
        nets[name] = AODNet().eval()
        save_network(tmp_path / f"{name}.pth", {"params": nets[name]})
    out = tmp_path / "eval"
    code = eval_classification.main(
        ["--data", str(degraded), "--clean", str(root / "CUB"),
         "--classifier", f"resnet50={classifier_dir / 'classifier.pth'}",
         "--arch", "AODNet", "--ckpt", f"without={tmp_path / 'without.pth'}",
         "--ckpt", f"with={tmp_path / 'with.pth'}", "--tile", "24", "--tile-overlap", "8",
         "--out", str(out), "--save-images", "--device", "cpu"]
    )  # fmt: skip
    assert code == 1
    assert f"{broken}: cannot decode" in capsys.readouterr().err

    predictions = {row["image"]: row for row in read_csv(out / "predictions.csv")}
    test_keys = [k for i, k in enumerate(labels) if i % 4 >= 2]
    assert sorted(predictions) == sorted(test_keys)
    net = load_resnet(classifier_dir / "classifier.pth")
    # Independent predictions for the degraded images (read and viewed here).
    for key in test_keys:
        path = degraded / "images" / f"{key}.jpg"
        if path == broken:
            assert predictions[key]["resnet50/degraded"] == ""
            continue
        with torch.no_grad():
            expected = net(own_view(read_rgb01(path))).argmax(1).item()
        assert int(predictions[key]["resnet50/degraded"]) == expected
        assert int(predictions[key]["label"]) == labels[key]
    # Accuracies equal a count of correct predictions (labels from the metadata).
    rows = {(r["classifier"], r["source"]): r for r in read_csv(out / "top1.csv")}
    assert set(rows) == {("resnet50", s) for s in ("clean", "degraded", "without", "with")}
    for source, total in (("clean", 6), ("degraded", 5), ("without", 5), ("with", 5)):
        column = f"resnet50/{source}"
        hits = [int(p[column]) == labels[k] for k, p in predictions.items() if p[column] != ""]
        assert len(hits) == total == int(rows[("resnet50", source)]["total"])
        assert int(rows[("resnet50", source)]["correct"]) == sum(hits)
        expected_top1 = 100 * sum(hits) / total
        assert float(rows[("resnet50", source)]["top1"]) == pytest.approx(expected_top1, abs=1e-5)
    assert rows[("resnet50", "degraded")]["degradation"] == "lowlight, severity 5"
    assert "| resnet50 |" in (out / "top1.md").read_text()

    # The saved restorations form a CUB root: classifying them as "degraded" input gives the
    # "with" column again (8-bit PNGs hold exactly the rounded images that were classified).
    # The unreadable image has no restoration, so it is reported missing again.
    again = tmp_path / "again"
    restored_root = out / "restored" / "with"
    code = eval_classification.main(
        ["--data", str(restored_root), "--classifier", str(classifier_dir / "classifier.pth"),
         "--out", str(again), "--device", "cpu"]
    )  # fmt: skip
    assert code == 1 and f"{broken.stem}.jpg: no such image file" in capsys.readouterr().err
    second = {row["image"]: row["ResNet50/degraded"] for row in read_csv(again / "predictions.csv")}
    assert second == {k: p["resnet50/with"] for k, p in predictions.items() if p["resnet50/with"]}


def test_eval_classification_rejects_a_mismatched_classifier(trained, tmp_path, capsys):
    root, _, classifier_dir = trained
    state = torch.load(classifier_dir / "classifier.pth", weights_only=True)
    state["arch"] = {**state["arch"], "num_classes": 5}
    state["params"]["fc.weight"] = torch.zeros(5, 2048)
    state["params"]["fc.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "five.pth")
    code = eval_classification.main(
        ["--data", str(root / "CUB"), "--classifier", str(tmp_path / "five.pth"),
         "--out", str(tmp_path / "o")]
    )  # fmt: skip
    assert code == 2 and "has 5 classes but" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["train_classifier", "eval_classification"])
def test_help_works(script):
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    done = subprocess.run(
        [python, str(REPO / "scripts" / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Example" in done.stdout
