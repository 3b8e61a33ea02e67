"""Codec x chunk size x dtype sweep for the feature store, on real speech.

Features of every clip of the 300-clip Speech Commands tree in ../shared/data (real speech, mostly
full one-second clips with their noise floor, like the release; FSDD's trimmed clips would be mostly
zero padding and flatter the ratios) are computed once per variant; each codec then writes them to a
fresh Zarr array (chunked along N) and reads them back whole. Reports the size ratio (raw / on disk),
write and read MB/s of raw feature bytes: median of --repeats runs after a warm-up.

    python benchmarks/store_codecs.py [--data ../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, timed, write_results  # noqa: E402

CODECS = [
    "none", "zstd-1", "zstd-3", "blosc-lz4-1-shuffle", "blosc-lz4-5-shuffle", "blosc-zstd-1-shuffle",
    "blosc-zstd-3-shuffle", "blosc-zstd-1-bitshuffle", "blosc-lz4-5-bitshuffle",
]  # fmt: skip
CHUNK_MB = [4, 16, 64]  # raw MB per chunk; capped at every row in one chunk


def real_speech_waves(data: Path) -> np.ndarray:
    from speechcls.audio.decode import load_clip

    files = sorted((data / "speech_commands_v0.01_mini").glob("*/*.wav"))
    if not files:
        raise SystemExit(f"no real speech under {data}: pass --data")
    with ThreadPoolExecutor(4) as pool:
        return np.stack([a for a, _ in pool.map(load_clip, files)])


def features(waves: np.ndarray, variant: str, dtype: str) -> np.ndarray:
    import torch

    from speechcls.audio.features import FeatureExtractor
    from speechcls.config import FeatureParams

    ex = FeatureExtractor(FeatureParams(variant, dtype=dtype))
    with torch.inference_mode():
        out = torch.cat([ex(torch.from_numpy(waves[i : i + 256])) for i in range(0, len(waves), 256)])
    if dtype == "float16" and variant != "waveform":
        out = out.half()
    return np.ascontiguousarray(out.numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer codecs and chunk sizes (for tests)")
    ap.add_argument(
        "--out", type=Path, default=None, help="results folder [default: benchmarks/results; --quick: results/quick]"
    )
    args = ap.parse_args()
    import zarr

    from speechcls.store.format import make_codec
    from speechcls.store.location import dir_bytes

    print(f"reading the real clips under {args.data} ...", flush=True)
    waves = real_speech_waves(args.data)
    codecs = CODECS[:3] if args.quick else CODECS
    chunk_mbs = [16] if args.quick else CHUNK_MB
    combos = [
        ("spectrogram", "float32"),
        ("mel", "float32"),
        ("complex", "float32"),
        ("waveform", "float32"),
    ]  # waveform is stored as int16 whatever the dtype
    if not args.quick:
        combos += [("spectrogram", "float16"), ("mel", "float16"), ("complex", "float16")]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-codecs-"))
    try:
        for variant, dtype in combos:
            print(f"computing {variant} {dtype} features of {len(waves)} clips ...", flush=True)
            x = features(waves, variant, dtype)
            item = x[0].nbytes
            for chunk_mb in chunk_mbs:
                chunk = max(1, min(len(x), (chunk_mb << 20) // item))
                for codec in codecs:
                    path = tmp / "a.zarr"

                    def write():
                        shutil.rmtree(path, ignore_errors=True)
                        arr = zarr.create_array(
                            str(path),
                            shape=x.shape,
                            chunks=(chunk, *x.shape[1:]),
                            dtype=x.dtype,
                            compressors=make_codec(codec),
                        )
                        arr[:] = x

                    w = timed(write, args.repeats)
                    arr = zarr.open_array(str(path), mode="r")
                    r = timed(lambda: arr[:], args.repeats)
                    on_disk = dir_bytes(path)
                    rows.append({
                        "variant": variant, "dtype": str(x.dtype), "chunk_rows": chunk,
                        "chunk_MB": round(chunk * item / 2**20, 1),
                        "codec": codec, "ratio": x.nbytes / on_disk, "bytes_per_clip": on_disk / len(x),
                        "write_MBps": x.nbytes / w["median_s"] / 1e6, "read_MBps": x.nbytes / r["median_s"] / 1e6,
                        "write_min_max_s": [w["min_s"], w["max_s"]], "read_min_max_s": [r["min_s"], r["max_s"]],
                    })  # fmt: skip
                    print(f"{variant:11s} {dtype:7s} chunk {chunk:5d} {codec:24s} ratio {rows[-1]['ratio']:.3f} "
                          f"write {rows[-1]['write_MBps']:7.0f} MB/s read {rows[-1]['read_MBps']:7.0f} MB/s",
                          flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"clips": len(waves), "data": "speech_commands_v0.01_mini (300 real clips)"}
    cols = ["variant", "dtype", "chunk_rows", "chunk_MB", "codec", "ratio", "bytes_per_clip", "write_MBps", "read_MBps"]
    md = md_table(rows, cols)
    stem = write_results("store_codecs", info, rows, md, args.out, repeats=args.repeats, quick=args.quick)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
