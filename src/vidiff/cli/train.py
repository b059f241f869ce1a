"""`vidiff train CONFIG [--resume] [--out DIR] [--export [DIR]] [key.sub=value ...]`."""

from __future__ import annotations

import argparse

from vidiff.cli import CLIError

EPILOG = """\
A recipe is a TOML file (see configs/); any value can be overridden as key.sub=value.

Examples:
  vidiff train configs/world_vae.toml                              # VAE -> runs/world_vae/export
  vidiff train configs/world_dit.toml --cache-only                 # encode the latent cache
  vidiff train configs/world_dit.toml train.steps=2000 train.lr=3e-4
  vidiff train configs/world_dit.toml --resume                     # continue the newest checkpoint
  vidiff train configs/world_dit.toml --export models/world-dit    # pipeline from the last checkpoint
  torchrun --nproc_per_node 4 -m vidiff train configs/world_dit.toml train.distributed=ddp

The run folder (out_dir, or --out) gets checkpoints, log.jsonl, loss.png and samples/; at the end a
diffusion run writes a VideoPipeline folder and a VAE run a VAE folder to export_dir
(default <out_dir>/export). Ctrl-C saves a checkpoint and stops; --resume continues exactly.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE or a video diffusion model from a TOML recipe",
        description="Train a model from a TOML recipe, with key.sub=value overrides.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="recipe TOML file, e.g. configs/world_dit.toml")
    # Overrides and options may be mixed in any order after CONFIG; argparse cannot interleave a
    # '*' positional with options, so everything after CONFIG is parsed again in `run`.
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="key.sub=value",
                   help="override recipe values, e.g. train.steps=500 model.dit.num_layers=4")
    _add_options(p)
    p.set_defaults(handler=run)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    p.add_argument("--out", metavar="DIR", help="run folder (overrides the recipe's out_dir)")
    p.add_argument("--export", nargs="?", const="", metavar="DIR",
                   help="do not train: export from the newest checkpoint (EMA weights) to DIR "
                        "(default: the recipe's export_dir)")
    p.add_argument("--cache-only", action="store_true", help="diffusion recipes: build the latent cache and exit")
    p.add_argument("--no-export", action="store_true", help="do not export at the end of training")


class _RestParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise CLIError(f"vidiff train: {message}")


def _parse_rest(args: argparse.Namespace) -> argparse.Namespace:
    """Options and overrides given after CONFIG, merged with options given before it."""
    parser = _RestParser(prog="vidiff train", add_help=False)
    _add_options(parser)
    parser.add_argument("overrides", nargs="*")
    rest = parser.parse_intermixed_args(args.rest)
    for name in ("resume", "cache_only", "no_export"):
        setattr(rest, name, getattr(rest, name) or getattr(args, name))
    for name in ("out", "export"):
        if getattr(rest, name) is None:
            setattr(rest, name, getattr(args, name))
    rest.config = args.config
    return rest


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from vidiff.config import ConfigError
    from vidiff.train.checkpoint import CheckpointError
    from vidiff.train.recipe import load_recipe

    args = _parse_rest(args)

    if not os.path.isfile(args.config):
        raise CLIError(f"recipe {args.config} does not exist (see configs/ for examples)")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise CLIError(f"argument {bad[0]!r} is not an override of the form key.sub=value")
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    try:
        cfg = load_recipe(args.config, overrides)
    except ConfigError as err:
        raise CLIError(str(err)) from None

    from vidiff.train import tasks
    from vidiff.train.trainer import TrainingDivergedError

    try:
        if args.export is not None:
            path = tasks.export_run(cfg, args.export or None)
            print(f"vidiff: exported {cfg.task} model to {path} (from the newest checkpoint in {cfg.out_dir})")
            return 0
        if args.cache_only:
            path = tasks.build_cache(cfg, progress=cfg.train.progress)
            print(f"vidiff: latent cache ready at {path}")
            return 0
        result = tasks.train_recipe(cfg, resume=args.resume, export=not args.no_export)
    except (ConfigError, CheckpointError, TrainingDivergedError) as err:
        raise CLIError(str(err)) from None
    finally:
        from vidiff.train.distributed import shutdown_distributed

        shutdown_distributed()
    if int(os.environ.get("RANK", "0")) != 0:
        return 130 if result.interrupted else 0
    state = "interrupted" if result.interrupted else "finished"
    print(f"vidiff: training {state} at step {result.step}; run folder {cfg.out_dir}", file=sys.stderr)
    if not result.interrupted and result.step >= cfg.train.steps and not args.no_export:
        print(f"vidiff: exported {cfg.task} model to {tasks.export_dir_of(cfg)}")
    return 130 if result.interrupted else 0
