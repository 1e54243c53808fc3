"""Bake a Whisper model into an image: ``python docker/bake_model.py MODEL DEST``.

MODEL is a faster-whisper size (``tiny.en``, ``large-v3-turbo``, ...) or a Hugging Face repo id of
a CTranslate2 model, downloaded with ``faster_whisper.download_model`` into the Hugging Face cache
(a build cache mount in Dockerfile.local), or a directory that already holds such a model. Either
way the model's files are copied to DEST as plain files, and the model is checked to be complete:
without ``tokenizer.json`` faster-whisper would download a tokenizer when the pod starts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REQUIRED = ("model.bin", "config.json", "tokenizer.json")


def bake(model: str, dest: Path) -> Path:
    source = Path(model)
    if not source.is_dir():
        from faster_whisper import download_model

        print(f"bake_model: downloading {model}", flush=True)
        source = Path(download_model(model))
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise SystemExit(
            f"bake_model: {model} is not a CTranslate2 Whisper model: no {', '.join(missing)}"
        )
    # follows symlinks (the Hugging Face cache links into its blob store); skips dot files
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".*"))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"bake_model: {model} -> {dest} ({size / 1e6:.0f} MB)", flush=True)
    return dest


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: bake_model.py MODEL DEST")
    bake(argv[0], Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
