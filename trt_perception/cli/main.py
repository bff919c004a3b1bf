"""``trt-perception``: one command, one module per subcommand (``add_arguments`` + ``run``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from trt_perception import __version__
from trt_perception.errors import TrtPerceptionError

# subcommand -> module with add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "infer": "trt_perception.cli.infer",
    "make-bag": "trt_perception.cli.make_bag",
    "bag-eval": "trt_perception.cli.bag_eval",
    "build": "trt_perception.cli.build",
    "compare": "trt_perception.cli.compare",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand whose module imports; broken ones report why when run."""
    parser = argparse.ArgumentParser(
        prog="trt-perception", description="Segmentation and detection models (ONNX Runtime, TensorRT) on images and bags."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            broken = subparsers.add_parser(name, help=f"(unavailable: {error})")
            broken.set_defaults(handler=None, import_error=f"{module_name}: {error}")
            continue
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None
        subparser = subparsers.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(subparser)
        subparser.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trt-perception`` console script."""
    args = build_parser().parse_args(argv)
    if args.handler is None:
        print(f"trt-perception {args.command}: unavailable: {args.import_error}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except TrtPerceptionError as error:
        print(f"trt-perception {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be read or written: one line, not a traceback
        print(f"trt-perception {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
