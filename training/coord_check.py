"""muP coordinate check: train several widths for a few steps under muP and SP and plot activation sizes.

    python training/coord_check.py                                   # widths 64..512, 10 steps, 3 seeds
    python training/coord_check.py --widths 64,128,256 --steps 5 --family tinyllama

Writes coord_check.png, coord_check.md and coord_check.json to --output-dir and prints the table. Under muP the
curves are flat across width; under SP they grow. See hf_smallllm.train.coord_check and docs/mup.md.
"""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from hf_smallllm.families import FAMILY_NAMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="64,128,256,512",
                        help="comma-separated hidden sizes; the smallest is the muP base width (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="AdamW steps per width (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds averaged over (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2,
                        help="base learning rate (muP: of the groups; SP: global) (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=64, help="bytes per sequence (default: %(default)s)")
    parser.add_argument("--family", default="btlm", choices=FAMILY_NAMES,
                        help="whose tiny-preset shape (norm, positions, biases, tying) to use (default: %(default)s)")
    parser.add_argument("--num-layers", type=int, default=2, help="decoder blocks (default: %(default)s)")
    parser.add_argument("--num-heads", type=int, default=4,
                        help="attention heads at every width; head size grows with width (default: %(default)s)")
    parser.add_argument("--parametrizations", default="mup,sp", help="which of mup,sp to run (default: %(default)s)")
    parser.add_argument("--output-dir", default="coord_check", help="where the PNG/MD/JSON go (default: %(default)s)")
    return parser


def integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{option}={text!r} must be comma-separated integers") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hf_smallllm.train.coord_check import coord_check

    try:
        result = coord_check(
            integers(args.widths, "--widths"), args.steps, seeds=integers(args.seeds, "--seeds"), lr=args.lr,
            batch_size=args.batch_size, seq_len=args.seq_len, family=args.family, num_layers=args.num_layers,
            num_heads=args.num_heads,
            parametrizations=[p.strip() for p in args.parametrizations.split(",") if p.strip()],
        )
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = result.save(args.output_dir)
    print(result.to_markdown())
    for parametrization in result.records:
        print(f"{parametrization}: largest growth {result.widths[-1]}/{result.widths[0]} = "
              f"{result.max_growth(parametrization):.2f}x")
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
