#!/usr/bin/env python3
"""Record what Hugging Face's DetrImageProcessor makes of images, for test/test_preprocess.py.

The reference is made WITHOUT this package (this script does not import it): ``transformers``'
``DetrImageProcessor`` with the facebook/detr-resnet-50 preprocessor settings (shortest edge 800,
longest edge 1333, bilinear resampling):

- ``detr_transformers_sizes.json``: the processor on images of a few camera sizes (``pixel_values``
  shape), and its own ``get_resize_output_image_size`` on a sweep of source sizes (it reads only
  the image's shape);
- ``detr_transformers_pixels.npz``: the resized pixels (the processor with rescaling and
  normalization off), every 4th row and column, for coffee.png (enlarged 2x) and motorcycle_left.png
  repeated 3x per pixel (shrunk 1.875x), both as decoded by Pillow.

The image processor needs numpy and Pillow besides transformers (no torch). In a venv of its own:

    python3 -m venv /tmp/hfref
    /tmp/hfref/bin/pip install numpy pillow transformers==4.46.3
    /tmp/hfref/bin/python scripts/record_detr_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "test" / "fixtures" / "references" / "detr_transformers_sizes.json"
PIXELS_OUT = OUT.with_name("detr_transformers_pixels.npz")
IMAGES = REPO / "test" / "fixtures" / "images"
# name -> (fixture image, pixel repetition factor)
PIXEL_CASES = {"coffee": ("coffee.png", 1), "motorcycle_left_x3": ("motorcycle_left.png", 3)}
SUBSAMPLE = 4
SHORTEST, LONGEST = 800, 1333
CAMERA_SIZES = [(480, 640), (720, 1280), (1080, 1920), (800, 1280), (1536, 2048), (1280, 720), (300, 1500),
                (1500, 300), (800, 800), (750, 1334), (799, 1333), (2160, 3840)]


def main() -> int:
    import transformers
    from transformers.models.detr.image_processing_detr import DetrImageProcessor, get_resize_output_image_size

    processor = DetrImageProcessor(size={"shortest_edge": SHORTEST, "longest_edge": LONGEST})
    processed = []
    for height, width in CAMERA_SIZES:
        pixels = processor(images=np.zeros((height, width, 3), np.uint8), return_tensors="np")["pixel_values"]
        processed.append([height, width, *pixels.shape[2:]])
    swept = []
    for height in range(1, 2400, 47):
        for width in range(1, 4400, 83):
            shape_only = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))
            size = get_resize_output_image_size(shape_only, SHORTEST, LONGEST, input_data_format="channels_last")
            swept.append([height, width, *size])
    OUT.write_text(json.dumps({
        "transformers": transformers.__version__,
        "shortest_edge": SHORTEST,
        "longest_edge": LONGEST,
        "processor": processed,
        "get_resize_output_image_size": swept,
    }) + "\n")
    print(f"wrote {len(processed)} processed and {len(swept)} swept sizes to {OUT}")
    record_pixels(processor)
    return 0


def record_pixels(processor: object) -> None:
    """The processor's resized pixels (no rescale, no normalization) of the PIXEL_CASES."""
    from PIL import Image

    arrays = {}
    for name, (file_name, factor) in PIXEL_CASES.items():
        rgb = np.asarray(Image.open(IMAGES / file_name).convert("RGB"))
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
        pixels = processor(images=rgb, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        resized = np.rint(pixels.transpose(1, 2, 0)).astype(np.uint8)  # CHW float of whole values -> HWC uint8
        assert np.array_equal(resized, pixels.transpose(1, 2, 0))
        arrays[name] = resized[::SUBSAMPLE, ::SUBSAMPLE]
        arrays[f"{name}_shape"] = np.asarray(resized.shape)
    np.savez_compressed(PIXELS_OUT, **arrays)
    print(f"wrote {', '.join(PIXEL_CASES)} to {PIXELS_OUT}")


if __name__ == "__main__":
    raise SystemExit(main())
