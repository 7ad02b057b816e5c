"""The hostile user's trial (issue "Hardening"), bad data files: each is refused by the data layer with exit 2 and
one `error:` line that names the file (or the dataset) and says what is wrong, before anything large is allocated or
decoded, and without a file left behind, in the working directory or beside the data."""
from __future__ import annotations

import gzip
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepatlas

TEXT = "\n\n".join(f"the quick brown fox {i} jumps over the lazy dog." for i in range(60))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny trained runs the predict cases read (a few seconds in all)."""
    root = tmp_path_factory.mktemp("hardening-runs")
    (root / "text.txt").write_text(TEXT)
    made = {}
    for name, data, overrides in [("lenet", None, {"epochs": "1"}),
                                  ("gpt", root / "text.txt", {"epochs": "1", "steps": "5"}),
                                  ("elmo", root / "text.txt", {"epochs": "1", "steps": "5", "tokens": "word"}),
                                  ("seq2seq", None, {"epochs": "1", "steps": "5"})]:
        made[name] = root / name
        deepatlas.train(name, data=None if data is None else str(data), out=made[name], overrides=overrides)
    return made


# ---- makers: each writes one bad input under `root` and returns its path ------------------------

def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)
    return path


def bomb(path: Path, width: int, height: int) -> Path:
    """A 4x4 PNG whose header (IHDR, with its CRC fixed) declares width x height: tiny on disk, huge decoded."""
    raw = bytearray(png(path, size=4).read_bytes())
    raw[16:24] = struct.pack(">II", width, height)  # after the signature (8), IHDR's length (4) and type (4)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # CRC over the chunk type and its 13 bytes
    return write(path, bytes(raw))


def class_folder(root: Path, per_class: int, odd: tuple[str, bytes] | None = None) -> Path:
    """Two class sub-folders of 8x8 images; `odd` = (name, bytes) adds one more file to the first."""
    for label, value in (("a", 0), ("b", 255)):
        for i in range(per_class):
            png(root / label / f"{i}.png", value)
    if odd is not None:
        write(root / "a" / odd[0], odd[1])
    return root


def idx(path: Path, array, dims: tuple[int, ...] | None = None) -> Path:
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    data = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()
    return write(path, gzip.compress(data) if path.suffix == ".gz" else data)


def idx_folder(root: Path, n_train: int = 12, n_test: int = 4, train_images: bytes | None = None) -> Path:
    """MNIST's four files; `train_images` replaces the training images' bytes."""
    idx(root / "train-images-idx3-ubyte", np.zeros((n_train, 4, 4)))
    idx(root / "train-labels-idx1-ubyte", np.arange(n_train) % 2)
    idx(root / "t10k-images-idx3-ubyte", np.zeros((n_test, 4, 4)))
    idx(root / "t10k-labels-idx1-ubyte", np.arange(n_test) % 2)
    if train_images is not None:
        write(root / "train-images-idx3-ubyte", train_images)
    return root


def huge_idx_gz(root: Path) -> Path:
    folder = idx_folder(root)
    (folder / "train-images-idx3-ubyte").unlink()
    idx(folder / "train-images-idx3-ubyte.gz", np.zeros(16), dims=(60000, 60000, 60000))
    return folder


def wav(path: Path, rate: int = 8000, width: int = 2, data: bytes = bytes(200)) -> Path:
    """A PCM WAV file written field by field, so that its header may say what `wave` would refuse to write."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * width, width, 8 * width)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return write(path, b"RIFF" + struct.pack("<I", len(body)) + body)


def csv_rows(path: Path, cell: str) -> Path:
    """40 rows of a, b, y whose ninth line holds `cell` in column a."""
    lines = ["a,b,y", *[f"{i},{i % 3},{i % 2}" for i in range(40)]]
    lines[8] = f"{cell},1,1"
    return write(path, "\n".join(lines) + "\n")


def run_features_csv(run: Path, path: Path, cell: str) -> Path:
    """Two rows with every feature column of a tabular run, the first feature of the second row `cell`."""
    names = [f["name"] for f in json.loads((run / "config.json").read_text())["data"]["features"]]
    return write(path, ",".join(names) + "\n" + ",".join("1" for _ in names) + "\n"
                 + ",".join([cell] + ["1"] * (len(names) - 1)) + "\n")


BINARY = bytes(range(256)) * 4
MEGABYTE_PROMPT = "the quick brown fox. " * 50_000

# id: (argv from (data folder, runs, mlp run), what the one line must say)
CASES = {
    # 1. every split non-empty
    "csv of 2 rows": (lambda d, r, m: ["train", "mlp", "--data", write(d / "two.csv", "a,b,y\n1,2,0\n3,4,1\n"),
                                       "--target", "y"],
                      "two.csv: 2 rows; a 60/20/20 train/val/test split needs at least 3"),
    "image folder, one image per class": (lambda d, r, m: ["train", "lenet", "--data", class_folder(d / "one", 1)],
                                          "one: 2 images; a 60/20/20 train/val/test split needs at least 3"),
    "segmentation folder of 1 image": (lambda d, r, m: ["train", "unet", "--data", (png(d / "seg/images/0.png"),
                                                        png(d / "seg/masks/0.png", 1), d / "seg")[2]],
                                       "seg: 1 image(s); a 60/20/20 split needs at least 3"),
    # 2. decompression bombs: the header's pixel count, before decoding
    "png of 60000x60000 in a training folder": (
        lambda d, r, m: ["train", "lenet", "--data", class_folder(d / "bombs", 5, ("huge.png", bomb(
            d / "huge.png", 60000, 60000).read_bytes()))], "huge.png: its header declares more than"),
    "png of 9000x9000 to predict": (lambda d, r, m: ["predict", r["lenet"], bomb(d / "big.png", 9000, 9000)],
                                    "big.png: its header declares 9000x9000 = 81,000,000 pixels; images may have"),
    "png of 60000x60000 to predict": (lambda d, r, m: ["predict", r["lenet"], bomb(d / "huge.png", 60000, 60000)],
                                      "huge.png: its header declares more than"),
    "png of 60000x60000 as a mask": (lambda d, r, m: ["train", "unet", "--data", (
        png(d / "s/images/0.png"), bomb(d / "s/masks/0.png", 60000, 60000), d / "s")[2]],
        "masks/0.png: its header declares more than"),
    # 3. IDX headers against the file's size
    "idx with 255 dimensions": (lambda d, r, m: ["train", "lenet", "--data", idx_folder(
        d / "idx", train_images=bytes([0, 0, 8, 255]) + bytes(64))], "its header gives 255 dimensions; expected 3"),
    "idx announcing 60000^3 bytes": (lambda d, r, m: ["train", "lenet", "--data", idx_folder(
        d / "idx", train_images=bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 60000, 60000) + bytes(16))],
        "train-images-idx3-ubyte: its header announces 60000 x 60000 x 60000 = 216,000,000,000,000 bytes"),
    "gzipped idx announcing 60000^3 bytes": (lambda d, r, m: ["train", "lenet", "--data", huge_idx_gz(d / "idx")],
                                             "more than a 31-byte gzip file can hold"),
    "idx with a truncated header": (lambda d, r, m: ["train", "lenet", "--data", idx_folder(
        d / "idx", train_images=bytes([0, 0, 8, 3, 0, 0]))], "the header ends early"),
    "idx of one training image": (lambda d, r, m: ["train", "lenet", "--data", idx_folder(d / "idx", n_train=1)],
                                  "1 image(s); its last sixth is the validation split, so it needs at least 6"),
    "idx of no test image": (lambda d, r, m: ["train", "lenet", "--data", idx_folder(d / "idx", n_test=0)],
                             "t10k-images-idx3-ubyte: no images; the test split needs at least one"),
    # 4. sizes in embedded names
    "adding-10000": (lambda d, r, m: ["train", "lstm", "--data", "adding-10000"],
                     "adding-10000: adding-T takes a length T from 2 to 1,000"),
    "copy-1": (lambda d, r, m: ["train", "tcn", "--data", "copy-1"], "copy-1: copy-T takes a length T from 2 to 1,000"),
    "shapes-1000000": (lambda d, r, m: ["train", "yolo", "--data", "shapes-1000000"],
                       "shapes-1000000: shapes-N takes a number of training images N from 1 to 20,000"),
    "shapes at 1024x1024": (lambda d, r, m: ["train", "unet", "--set", "image_size=1024"],
                            "shapes at image_size=1024: 1,500 scenes of 1024x1024 are more than"),
    # 5. non-finite numbers in numeric columns
    "csv cell 1e400": (lambda d, r, m: ["train", "mlp", "--data", csv_rows(d / "t.csv", "1e400"), "--target", "y"],
                       "t.csv: line 9: column 'a' holds '1e400', not a finite number"),
    "csv cell -inf": (lambda d, r, m: ["train", "mlp", "--data", csv_rows(d / "t.csv", "-inf"), "--target", "y"],
                      "t.csv: line 9: column 'a' holds '-inf', not a finite number"),
    "csv cell nan": (lambda d, r, m: ["train", "mlp", "--data", csv_rows(d / "t.csv", "nan"), "--target", "y",
                                      "--set", "data.missing=error"],
                     "t.csv: gaps in 'a' 1 (first: line 9); --set missing=impute fills them"),
    "csv cell inf to predict": (lambda d, r, m: ["predict", m, run_features_csv(m, d / "p.csv", "inf")],
                                "p.csv: line 3: column 'mean radius' holds 'inf', not a finite number"),
    # 6. a megabyte of prompt to a model that reads all of it
    "1 MB to translate": (lambda d, r, m: ["predict", r["seq2seq"], MEGABYTE_PROMPT],
                          "the text to translate: 1,049,999 characters; a source may have 1,000 at most"),
    "a file line of 5,000 characters to translate": (
        lambda d, r, m: ["predict", r["seq2seq"], write(d / "src.txt", "21 November 2026\n\n" + "1" * 5000)],
        "src.txt: line 3: 5,000 characters; a source may have 1,000 at most"),
    "1 MB prompt to ELMo": (lambda d, r, m: ["predict", r["elmo"], MEGABYTE_PROMPT],
                            "ELMo reads all of its prompt, which may be 10,000 tokens at most"),
    # 7. other readers: empty, binary, misnamed, header-only files and empty folders
    "empty csv": (lambda d, r, m: ["train", "mlp", "--data", write(d / "e.csv", ""), "--target", "y"],
                  "e.csv: needs a header row and at least one data row"),
    "header-only csv": (lambda d, r, m: ["train", "mlp", "--data", write(d / "h.csv", "a,b,y\n"), "--target", "y"],
                        "h.csv: needs a header row and at least one data row"),
    "binary csv": (lambda d, r, m: ["train", "mlp", "--data", write(d / "b.csv", BINARY), "--target", "y"],
                   "b.csv: not a readable CSV file"),
    "a folder as csv": (lambda d, r, m: ["train", "mlp", "--data", (d / "dir").mkdir() or d / "dir", "--target", "y"],
                        "dir: a folder; expected a CSV file"),
    "a folder to predict for mlp": (lambda d, r, m: ["predict", m, (d / "dir").mkdir() or d / "dir"],
                                    "dir: a folder; expected a CSV file"),
    "header-only series csv": (lambda d, r, m: ["train", "lstm", "--data", write(d / "s.csv", "value\n")],
                               "s.csv: needs a header row and at least one data row"),
    "series cell inf": (lambda d, r, m: ["train", "lstm", "--data", write(d / "s.csv", "value\n1\ninf\n2\n")],
                        "s.csv:3: column 'value' holds 'inf'"),
    "image folder without classes": (lambda d, r, m: ["train", "lenet", "--data", (d / "dir").mkdir() or d / "dir"],
                                     "dir: needs one sub-folder of images per class"),
    "binary png in a class folder": (lambda d, r, m: ["train", "lenet", "--data",
                                                      class_folder(d / "c", 5, ("x.png", BINARY))],
                                     "x.png: not a readable image (UnidentifiedImageError)"),
    "truncated png in a class folder": (lambda d, r, m: ["train", "lenet", "--data", class_folder(
        d / "c", 5, ("x.png", png(d / "full.png", size=64).read_bytes()[:60]))], "x.png: not a readable image"),
    "empty png to predict": (lambda d, r, m: ["predict", r["lenet"], write(d / "e.png", b"")],
                             "e.png: not a readable image"),
    "a csv to predict for lenet": (lambda d, r, m: ["predict", r["lenet"], csv_rows(d / "t.csv", "1")],
                                   "t.csv: not a readable image"),
    "empty folder to predict for lenet": (lambda d, r, m: ["predict", r["lenet"], (d / "dir").mkdir() or d / "dir"],
                                          "dir: no images in this folder"),
    "empty text": (lambda d, r, m: ["train", "gpt", "--data", write(d / "e.txt", "")], "e.txt: the file is empty"),
    "binary text": (lambda d, r, m: ["train", "gpt", "--data", write(d / "b.txt", BINARY)], "b.txt: not UTF-8 text"),
    "binary words": (lambda d, r, m: ["train", "word2vec", "--data", write(d / "b.txt", BINARY)],
                     "b.txt: not UTF-8 text"),
    "binary tsv": (lambda d, r, m: ["train", "seq2seq", "--data", write(d / "b.tsv", BINARY)],
                   "b.tsv: not a UTF-8 text file"),
    "a folder as tsv": (lambda d, r, m: ["train", "seq2seq", "--data", (d / "dir").mkdir() or d / "dir"],
                        "dir: a folder; expected a text file of source<TAB>target lines"),
    "binary expressions": (lambda d, r, m: ["train", "recursive_nn", "--data", write(d / "b.txt", BINARY)],
                           "b.txt: cannot read (UnicodeDecodeError"),
    "binary wav": (lambda d, r, m: ["train", "wavenet", "--data", write(d / "w" / "a.wav", BINARY).parent],
                   "a.wav: not a readable PCM WAV file (file does not start with RIFF id)"),
    "empty wav": (lambda d, r, m: ["train", "wavenet", "--data", write(d / "w" / "a.wav", b"").parent],
                  "a.wav: not a readable PCM WAV file (EOFError)"),
    "wav at 0 Hz": (lambda d, r, m: ["train", "wavenet", "--data", wav(d / "w" / "a.wav", rate=0).parent],
                    "a.wav: 16-bit samples at 0 Hz; expected 8, 16, 24 or 32-bit PCM at a positive rate"),
    "wav of 40-bit samples": (lambda d, r, m: ["train", "wavenet", "--data", wav(d / "w" / "a.wav", width=5).parent],
                              "a.wav: 40-bit samples at 8000 Hz"),
    "binary yolo labels": (lambda d, r, m: ["train", "yolo", "--data", (
        png(d / "y/images/0.png"), write(d / "y/labels/0.txt", BINARY), d / "y")[2]], "0.txt: not UTF-8 text"),
    "binary yolo classes.txt": (lambda d, r, m: ["train", "yolo", "--data", (
        png(d / "y/images/0.png"), (d / "y/labels").mkdir(), write(d / "y/classes.txt", BINARY), d / "y")[3]],
        "classes.txt: not UTF-8 text"),
    "binary segmentation classes.txt": (lambda d, r, m: ["train", "unet", "--data", (
        png(d / "s/images/0.png"), png(d / "s/masks/0.png", 1), write(d / "s/classes.txt", BINARY), d / "s")[3]],
        "classes.txt: not UTF-8 text"),
    "empty coco annotations": (lambda d, r, m: ["train", "yolo", "--data", write(d / "c/ann.json", "").parent],
                               "ann.json: not valid JSON"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_refused_in_one_line(case, refused, tmp_path, runs, mlp_run):
    argv, message = CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    refused(*argv(data, runs, mlp_run), message=message, watch=(data,))


def test_a_long_prompt_costs_what_the_context_costs(runs, cli_run):
    """GPT reads only its last block_size tokens: a megabyte of prompt is encoded, but only those reach the model,
    and the continuation is the one of the prompt's last block_size characters (char tokens)."""
    start = time.perf_counter()
    code, out, err = cli_run("predict", runs["gpt"], MEGABYTE_PROMPT, "--json")
    assert code == 0, err
    assert time.perf_counter() - start < 10
    block = json.loads((runs["gpt"] / "config.json").read_text())["model"]["block_size"]
    code, tail, err = cli_run("predict", runs["gpt"], MEGABYTE_PROMPT[-block:], "--json")
    assert code == 0, err
    assert json.loads(out)[0]["continuation"] == json.loads(tail)[0]["continuation"]
