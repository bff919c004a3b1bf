"""Where the CPU path spends its time per frame, and measured alternatives for its hot spots.

    python bench/profile_cpu.py [--repeat 30]

For each bundled model at 640x480 / 1280x720 / 1920x1080 (bgr8): the Preprocessor as a whole and
its resize alone (the part no rewrite can avoid), the decoder, and ``visualize.colorize`` (a
``cv2.LUT`` lookup for uint8 labels, bitwise mask passes for 0/1 labels) against plain
``palette[labels]`` indexing, checked to give identical colours. Prints a markdown table; this
script only measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_common import MODELS, RESOLUTIONS, camera_frame, median_ms  # noqa: E402
from trt_perception.decoders import SegmentationDecoder  # noqa: E402
from trt_perception.pipeline import Pipeline  # noqa: E402
from trt_perception.spec import load_model_spec  # noqa: E402
from trt_perception.visualize import colorize, full_palette, make_palette  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads, numpy {np.__version__}; median of {args.repeat}\n")
    print("| model | frame | preprocess ms | its cv2.resize ms | decode ms | colorize ms | palette[labels] ms | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for name in MODELS:
        spec = load_model_spec(name)
        pipeline = Pipeline.from_spec(spec)
        palette = make_palette(spec.palette, max(2, len(spec.labels or ())))
        table = full_palette(palette, np.dtype(np.uint8))  # so that plain indexing covers every uint8 label
        for size in RESOLUTIONS:
            frame = camera_frame(name, size)
            tensor, geometry = pipeline.preprocessor(frame, "BGR")
            content_h, content_w = geometry.content_size
            pre = median_ms(lambda: pipeline.preprocessor(frame, "BGR"), args.repeat)
            resize = median_ms(lambda: cv2.resize(frame, (content_w, content_h)), args.repeat)
            outputs = pipeline.backend.infer({pipeline.input_name: tensor})
            decoder = pipeline.decoder
            if isinstance(decoder, SegmentationDecoder):
                decode = median_ms(lambda: decoder.decode(outputs, geometry, True), args.repeat)
                labels = decoder.decode(outputs, geometry, True)
                ours = median_ms(lambda: colorize(labels, palette), args.repeat)
                indexed = median_ms(lambda: table[labels], args.repeat)
                same = bool(np.array_equal(colorize(labels, palette), table[labels]))
                cells = f"{decode:.2f} | {ours:.2f} | {indexed:.2f} | {same}"
            else:
                decode = median_ms(lambda: decoder.decode(outputs, geometry, 0.3), args.repeat)
                cells = f"{decode:.2f} | | |"
            print(f"| {name} | {size[1]}x{size[0]} | {pre:.2f} | {resize:.2f} | {cells} |")
        pipeline.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
