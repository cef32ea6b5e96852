"""Write a synthetic puppet dataset in the training layout of `stableanimator prepare-dataset`.

    python examples/puppets/make_dataset.py --out data/puppets --videos 200 --seed 0

Each video folder `puppet_<i>/` holds `images/`, `poses/`, `faces/` (box masks) and `face_embedding.npy`, and
`videos.txt` lists them: give `--train-data data/puppets/videos.txt` to examples/train_stableanimator.py.
`face_embedding.npy` is, by default, the shipped tiny-puppet recognizer's embedding of the face in the video's first
frame (what examples/puppets/train_tiny.py trains with, from the recognizer it trains itself).
See `diffusers_stableanimator.puppets` for what a puppet is.
"""

from __future__ import annotations

import argparse
import sys

from diffusers_stableanimator.errors import StableAnimatorError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write a synthetic puppet dataset (training layout).")
    parser.add_argument("--out", required=True, help="dataset folder to create (replaced only with --overwrite)")
    parser.add_argument("--videos", type=int, required=True, help="number of videos")
    parser.add_argument("--seed", type=int, default=0, help="the dataset's seed: same seed, same files")
    parser.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    parser.add_argument("--width", type=int, default=64, help="frame width (default 64)")
    parser.add_argument("--height", type=int, default=64, help="frame height (default 64)")
    parser.add_argument("--videos-per-puppet", type=int, default=1, help="clips of each identity, each with its own motion and background")
    parser.add_argument("--face-embedding", choices=("recognizer", "identity"), default="recognizer",
                        help="face_embedding.npy: 'recognizer' (default): the shipped tiny-puppet recognizer's embedding of the "
                             "face in each video's first frame; 'identity': a fixed projection of the puppet's parameters")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier puppet dataset in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from diffusers_stableanimator.puppets import write_dataset

    embedder = None  # write_dataset's default: puppets.identity_embedding
    if args.face_embedding == "recognizer":
        from diffusers_stableanimator.puppet_recognizer import reference_face_embedder
        from diffusers_stableanimator.tiny_puppet import load_tiny_puppet

        embedder = reference_face_embedder(load_tiny_puppet().face_recognizer)
    try:
        folders = write_dataset(args.out, args.videos, seed=args.seed, num_frames=args.frames, width=args.width,
                                height=args.height, videos_per_puppet=args.videos_per_puppet, overwrite=args.overwrite,
                                face_embedder=embedder)
    except StableAnimatorError as error:
        print(f"make_dataset: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(folders)} puppet videos in {args.out}/videos.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
