#!/usr/bin/env python3
"""Build extra look-alike character datasets from Debian game-art packages.

Part of the generalisation benchmark (issue 11): the shared datasets (freedroidrpg, wesnoth_units) are joined by
character datasets of other art styles, built the same way: every sprite frame is cropped to its visible pixels,
composited on white, padded to a centred square and saved as an RGB PNG, one folder per character.

Datasets built (see ``DATASETS``):

* ``freedink``  -- Dink Smallwood (package ``freedink-data``): hand-drawn/pre-rendered 1990s RPG sprites, BMP
  frames packed in ``dir.ff`` archives, white colour key, 4-8 walking directions and attack poses per character.
* ``widelands`` -- Widelands workers (package ``widelands-data``): painted isometric settler figures of five tribes
  from sprite sheets (rows x columns given in each worker's ``init.lua``), six walking directions plus work
  animations; only workers with high-resolution (scale 4) sheets are used.

Besides the characters, ``photos`` (``--only photos``; built by default) holds off-topic queries for the open set:
5 seeded square crops (40-100 % of the short side, 224 px) of each of 21 photographs from the desktop wallpaper
packages ``mate-backgrounds`` (its ``nature`` folder, 12 photos) and ``plasma-workspace-wallpapers`` (9 photos;
its drawings are left out): flowers, grass, water, wood, a forest path, a jetty, boats, a building.

Each dataset folder gets ``manifest.csv`` (class, file, source path inside the package, crop box in the source
frame as ``x0 y0 x1 y1``), ``COPYRIGHT.debian`` (the package's copyright file) and ``dataset.json`` (package,
version, counts). A contact sheet ``<name>_contact.png`` is written beside the dataset folders for eyeballing.

The packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (run ``apt-get update`` first;
needs network access to the Debian archive). The output is deterministic for a given package version. A dataset
whose folder already has a ``dataset.json`` is skipped unless ``--force``.

Usage::

    python benchmarks/generalisation/build_datasets.py                      # all character datasets
    python benchmarks/generalisation/build_datasets.py --only freedink --force --out /tmp/ds
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger("build_datasets")

MIN_SIDE = 16  # drop frames whose visible box is smaller than this on either side
MIN_PIXELS = 150  # drop frames with fewer visible pixels than this ("nearly empty")
MIN_IMAGES = 8  # drop characters with fewer distinct frames than this
MAX_IMAGES = 40  # keep at most this many frames per character (evenly spread over the sorted candidates)
PAD = 2  # white margin (px) around the crop before squaring

# A candidate frame: (source path inside the package, crop box offset in the source, RGBA frame image)
Frame = tuple[str, tuple[int, int], Image.Image]


# --------------------------------------------------------------------------------------------------- packages


def fetch_package(pkg: str, workdir: Path) -> tuple[Path, str]:
    """Download ``pkg`` with ``apt-get download`` into ``workdir`` and unpack it with ``dpkg -x``.

    Returns the unpacked root and the package version.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", pkg], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    debs = sorted(workdir.glob(f"{pkg}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {pkg} produced no .deb")
    deb = debs[-1]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    root = workdir / pkg
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root, version


# --------------------------------------------------------------------------------------------------- frames


def square_on_white(frame: Image.Image, mask: np.ndarray) -> tuple[Image.Image, tuple[int, int, int, int]] | None:
    """Crop ``frame`` to the bounding box of ``mask``, composite on white and pad to a centred square.

    ``frame`` is RGBA (alpha used for compositing) and ``mask`` a boolean array of visible pixels. Returns the RGB
    square and the crop box, or None when the visible part is tiny or nearly empty.
    """
    ys, xs = np.nonzero(mask)
    if xs.size < MIN_PIXELS:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    w, h = x1 - x0, y1 - y0
    if w < MIN_SIDE or h < MIN_SIDE:
        return None
    rgba = np.array(frame.convert("RGBA").crop((x0, y0, x1, y1)))
    alpha = np.where(mask[y0:y1, x0:x1], rgba[..., 3], 0).astype(np.float32)[..., None] / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    side = max(w, h) + 2 * PAD
    canvas = np.full((side, side, 3), 255, np.uint8)
    ox, oy = (side - w) // 2, (side - h) // 2
    canvas[oy : oy + h, ox : ox + w] = np.round(rgb).astype(np.uint8)
    return Image.fromarray(canvas, "RGB"), (x0, y0, x1, y1)


def select_frames(frames: Iterable[Frame], colour_key: tuple[int, int, int] | None = None) -> list[dict]:
    """Turn candidate frames of one character into distinct square images, at most ``MAX_IMAGES`` of them.

    Visible pixels are alpha > 0, or (``colour_key`` given) pixels different from the key colour. Frames that
    give byte-identical squares are de-duplicated (first one kept); the survivors are thinned evenly.
    """
    out, seen = [], set()
    for source, (dx, dy), img in frames:
        arr = np.array(img.convert("RGBA"))
        if colour_key is None:
            mask = arr[..., 3] > 0
        else:
            mask = np.any(arr[..., :3] != np.array(colour_key, np.uint8), axis=-1) & (arr[..., 3] > 0)
        res = square_on_white(img, mask)
        if res is None:
            continue
        sq, (x0, y0, x1, y1) = res
        digest = hashlib.sha1(sq.tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        out.append({"image": sq, "source": source, "box": f"{x0 + dx} {y0 + dy} {x1 + dx} {y1 + dy}"})
    if len(out) > MAX_IMAGES:
        keep = np.unique(np.round(np.linspace(0, len(out) - 1, MAX_IMAGES)).astype(int))
        out = [out[i] for i in keep]
    return out


def sheet_frames(path: Path, rel: str, rows: int, columns: int, frames: int, pick: Iterable[int]) -> Iterator[Frame]:
    """Cut frame indices ``pick`` out of a sprite sheet of ``rows`` x ``columns`` cells (row-major order)."""
    sheet = Image.open(path).convert("RGBA")
    cw, ch = sheet.width // columns, sheet.height // rows
    for i in pick:
        if not 0 <= i < min(frames, rows * columns):
            continue
        x, y = (i % columns) * cw, (i // columns) * ch
        yield f"{rel}#{i}", (x, y), sheet.crop((x, y, x + cw, y + ch))


# --------------------------------------------------------------------------------------------------- freedink

# character -> graphics sub-folders (each holds a dir.ff archive) of freedink-data
FREEDINK_CHARACTERS = {
    "dink": ["Dink/walk", "Dink/idle", "Dink/hit/normal", "Dink/push"],
    "pig": ["Animals/Pig"],
    "duck": ["Animals/Duck"],
    "fish_1": ["Animals/Fish/Fish1"],
    "fish_2": ["Animals/Fish/Fish2"],
    "gnome_blue": ["People/Gnome/Blue"],
    "gnome_purple": ["People/Gnome/Purple"],
    "gnome_green": ["People/Gnome/Green"],
    "old_man": ["People/Oldman"],
    "boatman": ["People/Boatman"],
    "maiden_blue": ["People/Maiden/Blue"],
    "maiden_red": ["People/Maiden/Red"],
    "maiden_brown": ["People/Maiden/Brown"],
    "fairy": ["People/Fairy"],
    "soldier": ["People/Soldier"],
    "girl": ["People/Girl"],
    "knight_blue": ["People/Knight/Blue", "People/Knight/Blue/Attack"],
    "knight_red": ["People/Knight/Red", "People/Knight/Red/Attack"],
    "knight_gold": ["People/Knight/Gold", "People/Knight/Gold/Attack"],
    "knight_silver": ["People/Knight/Silver", "People/Knight/Silver/Attack"],
    "peasant": ["People/Peasant2"],
    "mom": ["People/Mom"],
    "mom_brown": ["People/Mom/Brown"],
    "merchant": ["People/Merchant"],
    "merchant_blue": ["People/Merchant/Blue"],
    "merchant_purple": ["People/Merchant/Purple"],
    "merchant_green": ["People/Merchant/Green"],
    "slayer": ["foes/Slayers/Walk", "foes/Slayers/Attack"],
    "pillbug": ["foes/Pill"],
    "puddle_blue": ["foes/Puddle/Blue/Walk"],
    "puddle_red": ["foes/Puddle/Red/Walk"],
    "puddle_green": ["foes/Puddle/Green/Walk"],
    "stone_giant": ["foes/Stonegnt/walk", "foes/Stonegnt/Attack"],
    "goblin_soldier": ["foes/goblin/Soldier/walk", "foes/goblin/Soldier/attack"],
    "goblin_hammer": ["foes/goblin/Hammer/walk", "foes/goblin/Hammer/attack"],
    "goblin_horns": ["foes/goblin/Horns/walk", "foes/goblin/Horns/attack", "foes/goblin/Horns/attack2"],
    "spike": ["foes/Spike/Walk"],
    "bonca": ["foes/Bonca/Walk", "foes/Bonca/Attack"],
    "bonca_purple": ["foes/Bonca/Purple/Walk", "foes/Bonca/Purple/Attack"],
    "bonca_gray": ["foes/Bonca/Gray/Walk", "foes/Bonca/Gray/Attack"],
    "dragon": ["foes/Dragon"],
}


def read_fastfile(path: Path) -> list[tuple[str, bytes]]:
    """Read a Dink Smallwood ``dir.ff`` archive: an int32 count, then (int32 offset, char[13] name) entries, the
    last one marking the end of the data; returns (name, file bytes) pairs in archive order."""
    data = path.read_bytes()
    (count,) = struct.unpack_from("<i", data, 0)
    entries = [struct.unpack_from("<i13s", data, 4 + 17 * i) for i in range(count)]
    files = []
    for (start, name), (end, _) in zip(entries, entries[1:]):
        files.append((name.split(b"\0", 1)[0].decode("latin-1"), data[start:end]))
    return files


def build_freedink(root: Path) -> Iterator[tuple[str, list[Frame], tuple[int, int, int] | None]]:
    """Yield (character, candidate frames, colour key) for Dink Smallwood; white is the sprites' colour key."""
    graphics = root / "usr/share/games/dink/dink/graphics"
    for character, folders in FREEDINK_CHARACTERS.items():
        frames: list[Frame] = []
        for folder in folders:
            ff = graphics / folder / "dir.ff"
            for name, blob in read_fastfile(ff):
                if name.lower().startswith(("death", "die")):
                    continue  # corpses lying on the ground
                img = Image.open(io.BytesIO(blob)).convert("RGBA")
                frames.append((f"{ff.relative_to(root)}:{name}", (0, 0), img))
        yield character, frames, (255, 255, 255)


# --------------------------------------------------------------------------------------------------- widelands

WIDELANDS_FILE = re.compile(r"^(?P<anim>[a-z]+(?:_[a-z]+)*?)(?:_(?P<dir>e|ne|nw|se|sw|w))?_4\.png$")


def spritesheet_spec(init_lua: str, anim: str) -> tuple[int, int, int] | None:
    """Return (frames, rows, columns) of animation ``anim`` in a Widelands ``init.lua``'s spritesheets table."""
    m = re.search(r"spritesheets\s*=\s*\{(.*)", init_lua, re.S)
    if not m:
        return None
    block = re.search(rf"(?<![\w]){re.escape(anim)}\s*=\s*\{{((?:[^{{}}]|\{{[^{{}}]*\}})*)\}}", m.group(1))
    if not block:
        return None
    vals = {k: re.search(rf"\b{k}\s*=\s*(\d+)", block.group(1)) for k in ("frames", "rows", "columns")}
    if not all(vals.values()):
        return None
    return int(vals["frames"].group(1)), int(vals["rows"].group(1)), int(vals["columns"].group(1))


def build_widelands(root: Path) -> Iterator[tuple[str, list[Frame], tuple[int, int, int] | None]]:
    """Yield (tribe_worker, candidate frames, None) for every Widelands worker with scale-4 sprite sheets.

    Per animation and direction, the first and the middle frame are taken (walking in six directions, carrying,
    idle and work animations); the player-colour masks (``*_pc.png``) are ignored.
    """
    workers = root / "usr/share/games/widelands/data/tribes/workers"
    for wdir in sorted(p for p in workers.glob("*/*") if p.is_dir()):
        init_lua = (wdir / "init.lua").read_text(encoding="utf-8")
        frames: list[Frame] = []
        for png in sorted(wdir.glob("*_4.png")):
            m = WIDELANDS_FILE.match(png.name)
            if not m:
                continue
            spec = spritesheet_spec(init_lua, m.group("anim"))
            if spec is None:
                log.debug("no spritesheet spec for %s", png)
                continue
            n, rows, cols = spec
            frames.extend(sheet_frames(png, str(png.relative_to(root)), rows, cols, n, sorted({0, n // 2})))
        if frames:
            yield f"{wdir.parent.name}_{wdir.name}", frames, None


# --------------------------------------------------------------------------------------------------- output

DATASETS: dict[str, tuple[str, Callable]] = {
    "freedink": ("freedink-data", build_freedink),
    "widelands": ("widelands-data", build_widelands),
}


#: The photographs of ``photos``: package -> files inside it (the wallpapers that are photos, not drawings).
PHOTOS: dict[str, list[str]] = {
    "mate-backgrounds": [
        f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in (
            "Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird RainDrops Storm TwoWings Wood YellowFlower"
        ).split()
    ],
    "plasma-workspace-wallpapers": [
        f"usr/share/wallpapers/{name}/contents/images/1920x1080.jpg"
        for name in "BytheWater ColdRipple DarkestHour EveningGlow FallenLeaf Grey OneStandsOut Path summer_1am".split()
    ],
}
PHOTO_CROPS = 5  # square crops per photo
PHOTO_SIDE = 224


def write_photos(out_root: Path, workdir: Path) -> dict:
    """Fetch the wallpaper packages and write ``out_root/photos``: :data:`PHOTO_CROPS` seeded square crops of every
    photo of :data:`PHOTOS` (see the module docstring), with ``manifest.csv`` and ``dataset.json``."""
    staging = out_root / ".photos.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows, versions = [], {}
    for pkg, files in PHOTOS.items():
        root, versions[pkg] = fetch_package(pkg, workdir / pkg)
        shutil.copy(root / "usr/share/doc" / pkg / "copyright", staging / f"COPYRIGHT.{pkg}.debian")
        for rel in files:
            stem = Path(rel).parent.parent.parent.name if "wallpapers" in rel else Path(rel).stem
            seed = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little")
            rng = np.random.default_rng(seed)
            with Image.open(root / rel) as photo:
                photo = photo.convert("RGB")
                for k in range(PHOTO_CROPS):
                    side = int(min(photo.size) * rng.uniform(0.4, 1.0))
                    x0 = int(rng.integers(0, photo.size[0] - side + 1))
                    y0 = int(rng.integers(0, photo.size[1] - side + 1))
                    crop = photo.crop((x0, y0, x0 + side, y0 + side))
                    name = f"{stem}-{k}.png"
                    crop.resize((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.LANCZOS).save(staging / name)
                    rows.append({"file": name, "source": f"{pkg}:{rel}", "box": f"{x0} {y0} {x0 + side} {y0 + side}"})
    with open(staging / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "source", "box"])
        writer.writeheader()
        writer.writerows(rows)
    info = {"name": "photos", "packages": versions, "images": len(rows)}
    (staging / "dataset.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out_root / "photos", ignore_errors=True)
    staging.rename(out_root / "photos")
    return info


def write_dataset(name: str, pkg: str, builder: Callable, out_root: Path, workdir: Path) -> dict:
    """Fetch ``pkg``, run ``builder`` over it and write the dataset folder ``out_root/name`` atomically."""
    root, version = fetch_package(pkg, workdir / pkg)
    tmp = out_root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, counts, dropped = [], {}, {}
    for character, frames, key in builder(root):
        chosen = select_frames(frames, key)
        if len(chosen) < MIN_IMAGES:
            dropped[character] = len(chosen)
            continue
        (tmp / character).mkdir()
        for i, item in enumerate(chosen):
            fname = f"{i:03d}.png"
            item["image"].save(tmp / character / fname, optimize=False)
            rows.append({"class": character, "file": fname, "source": item["source"], "box": item["box"]})
        counts[character] = len(chosen)
    write_manifest(tmp / "manifest.csv", rows)
    shutil.copyfile(root / f"usr/share/doc/{pkg}/copyright", tmp / "COPYRIGHT.debian")
    info = {
        "name": name,
        "package": pkg,
        "version": version,
        "characters": len(counts),
        "images": sum(counts.values()),
        "per_character": counts,
        "dropped_characters": dropped,
    }
    (tmp / "dataset.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    final = out_root / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    contact_sheet(final, out_root / f"{name}_contact.png")
    return info


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Write manifest rows (class, file, source, box) as CSV."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["class", "file", "source", "box"])
        w.writeheader()
        w.writerows(rows)


def contact_sheet(folder: Path, dest: Path, per_row: int = 10, thumb: int = 56) -> None:
    """Save a contact sheet: one row per character, its first ``per_row`` images as thumbnails, name on the left."""
    chars = sorted(p for p in folder.iterdir() if p.is_dir())
    label_w = 150
    sheet = Image.new("RGB", (label_w + per_row * (thumb + 2), len(chars) * (thumb + 2)), (200, 200, 200))
    draw = ImageDraw.Draw(sheet)
    for r, cdir in enumerate(chars):
        y = r * (thumb + 2)
        draw.text((4, y + thumb // 2 - 6), cdir.name[:24], fill=(0, 0, 0))
        for c, png in enumerate(sorted(cdir.glob("*.png"))[:per_row]):
            im = Image.open(png).convert("RGB").resize((thumb, thumb), Image.LANCZOS)
            sheet.paste(im, (label_w + c * (thumb + 2), y))
    sheet.save(dest)


def summary_row(info: dict) -> str:
    """One line of the summary table for a dataset's ``dataset.json``."""
    counts = list(info.get("per_character", {}).values())
    if counts:
        stats = f"{min(counts):>4} {statistics.median(counts):>6g} {max(counts):>4}"
    else:
        stats = f"{'-':>4} {'-':>6} {'-':>4}"
    return (
        f"{info['name']:<12} {info['package']:<18} {info['version']:<22} "
        f"{info.get('characters', '-'):>5} {info['images']:>6} {stats}"
    )


def default_out() -> Path:
    """``$XDG_CACHE_HOME/lookalike/datasets`` (``~/.cache/lookalike/datasets``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lookalike" / "datasets"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Datasets: " + ", ".join(DATASETS),
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=default_out(),
        help="output folder, one sub-folder per dataset (default: %(default)s)",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        choices=[*DATASETS, "photos"],
        help="build only these datasets (default: all character datasets and the photos)",
    )
    ap.add_argument("--force", action="store_true", help="rebuild datasets that already exist")
    ap.add_argument(
        "--keep-downloads",
        type=Path,
        default=None,
        help="unpack packages here and keep them (default: a temporary folder, removed afterwards)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")

    names = args.only or [*DATASETS, "photos"]
    args.out.mkdir(parents=True, exist_ok=True)
    infos = []
    with tempfile.TemporaryDirectory(prefix="lookalike-debs-") as tmpdir:
        workdir = args.keep_downloads or Path(tmpdir)
        if "photos" in names:
            names.remove("photos")
            if (args.out / "photos" / "dataset.json").exists() and not args.force:
                log.info("photos: already built in %s (use --force to rebuild)", args.out / "photos")
            else:
                log.info("photos: %d crops -> %s", write_photos(args.out, workdir)["images"], args.out / "photos")
        for name in names:
            meta = args.out / name / "dataset.json"
            if meta.exists() and not args.force:
                log.info("%s: already built in %s (use --force to rebuild)", name, meta.parent)
                infos.append(json.loads(meta.read_text()))
                continue
            t0 = time.time()
            pkg, builder = DATASETS[name]
            info = write_dataset(name, pkg, builder, args.out, workdir)
            if info["dropped_characters"]:
                log.info("%s: dropped (fewer than %d images): %s", name, MIN_IMAGES, info["dropped_characters"])
            log.info("%s: built in %.0f s -> %s", name, time.time() - t0, args.out / name)
            infos.append(info)
    print(
        f"\n{'dataset':<12} {'package':<18} {'version':<22} {'chars':>5} {'images':>6} {'min':>4} "
        f"{'median':>6} {'max':>4}"
    )
    for info in infos:
        print(summary_row(info))
    print(f"\noutput: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
