"""The command line: --json output, errors as messages and exit codes, the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CLASSES, CORRUPT_NAME

from lookalike.app.cli import EXIT_ERROR, main


def test_search_json_has_the_documented_keys(bundle_path, small_dataset, capsys):
    _, queries = small_dataset
    query = queries["cook"][0]
    assert main(["search", str(bundle_path), str(query), "-k", "3", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {"predicted", "probabilities", "characters", "neighbors"} <= set(answer)
    assert answer["predicted"] in CLASSES
    assert set(answer["probabilities"]) == set(CLASSES)
    assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-4
    assert len(answer["neighbors"]) == 3 and len(answer["characters"]) == 3
    for item in answer["characters"] + answer["neighbors"]:
        assert {"label", "score", "path"} <= set(item) and item["label"] in CLASSES
    scores = [item["score"] for item in answer["neighbors"]]
    assert scores == sorted(scores, reverse=True)
    assert len({item["label"] for item in answer["characters"]}) == 3  # one entry per character


def test_search_text_output(bundle_path, small_dataset, capsys):
    _, queries = small_dataset
    assert main(["search", str(bundle_path), str(queries["123"][1]), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(("match: 123", "no close match: ")) and "\npredicted: " in out and "nearest centroid: " in out
    assert "nearest characters (best-matching image):" in out and "nearest images:" in out


def test_errors_are_messages_with_exit_code_one(bundle_path, small_dataset, tmp_path, capsys):
    root, queries = small_dataset
    corrupt = root / CLASSES[0] / CORRUPT_NAME
    assert main(["search", str(bundle_path), str(corrupt)]) == 1
    assert f"cannot read image {corrupt}" in capsys.readouterr().err
    assert main(["search", str(tmp_path), str(queries["cook"][0])]) == 1
    assert "not a lookalike bundle" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 1
    assert "dataset folder not found" in capsys.readouterr().err


def test_console_script_help_lists_the_commands():
    done = subprocess.run(
        [sys.executable, "-m", "lookalike.app.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "search", "serve", "demo", "add", "remove", "embed", "reindex", "recall"):
        assert command in done.stdout


def test_duplicates_finds_a_copied_file_across_splits(bundle_path, bundle, tmp_path, capsys):
    import csv
    import shutil

    copy = tmp_path / "new" / "copy.png"
    copy.parent.mkdir()
    original = next(r.path for r in bundle.index.records if r.split == "train")
    shutil.copy(original, copy)
    out_csv = tmp_path / "pairs.csv"
    assert main(["duplicates", str(bundle_path), "--query", str(copy.parent), "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "1 exact" in out
    rows = list(csv.DictReader(out_csv.open()))
    pair = next(r for r in rows if str(copy) in (r["path_a"], r["path_b"]))
    assert str(original) in (pair["path_a"], pair["path_b"]) and pair["exact"] == "True"


def test_audit_of_every_issue_writes_one_table_each(bundle_path, tmp_path, capsys):
    target = tmp_path / "audit.csv"
    assert main(["audit", str(bundle_path), "--issues", "all", "--top", "3", "--csv", str(target)]) == 0
    out = capsys.readouterr().out
    for heading in ("suspected label errors", "outliers:", "duplicates (cosine", "image quality:", "class balance:"):
        assert heading in out
    for name in ("audit.csv", "audit-outlier.csv", "audit-duplicate.csv", "audit-quality.csv", "audit-balance.csv"):
        assert (tmp_path / name).is_file()
    assert main(["audit", str(bundle_path), "--issues", "label,colour"]) == EXIT_ERROR


def test_the_demo_reuses_its_bundle_only_while_its_images_exist(bundle_path, small_dataset, tmp_path, capsys):
    """A demo bundle trained from a checkout that has since gone is trained again, not served half-working."""
    import hashlib
    import shutil

    from lookalike.app.cli import reusable_demo_bundle

    root, _ = small_dataset
    kept = tmp_path / "kept.bundle"
    shutil.copytree(bundle_path, kept)
    assert len(reusable_demo_bundle(kept).index) > 0
    assert "reusing the demo bundle" in capsys.readouterr().out

    moved = tmp_path / "moved.bundle"
    shutil.copytree(bundle_path, moved)
    metadata = moved / "metadata.json"
    metadata.write_text(metadata.read_text().replace(str(root), str(tmp_path / "deleted-checkout")))
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["files"]["metadata.json"] = hashlib.sha256(metadata.read_bytes()).hexdigest()
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert reusable_demo_bundle(moved) is None
    assert "no longer on disk; training it again" in capsys.readouterr().out
    assert reusable_demo_bundle(tmp_path / "absent.bundle") is None
