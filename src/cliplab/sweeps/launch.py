"""Launches a sweep described by `sweeps/<name>.yaml`: `python -m cliplab.sweeps.launch <name> [overrides]`.

A sweep file names an experiment (conf/experiment/), the swept parameters (Hydra multirun syntax) and fixed
overrides. The sweep runs in the stable directory `<paths.log_dir>/sweeps/<name>`, one job directory per
combination (named from its overrides), so launching again skips finished jobs and resumes interrupted ones.
Extra command-line overrides are appended (e.g. `cluster=slurm hydra.launcher.partition=gpu`).
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

SWEEPS_DIR = Path("sweeps")


def sweep_file(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise SystemExit(f"error: no sweep {name!r} (known: {', '.join(known) or 'none'})")
    return path


def sweep_command(path: Path, extra: list[str] = (), python: str = sys.executable) -> list[str]:
    """The `src/train.py -m ...` command line of a sweep file."""
    spec = yaml.safe_load(path.read_text()) or {}
    name = spec.get("name") or path.stem
    cmd = [python, "src/train.py", "-m"]
    if spec.get("experiment"):
        cmd.append(f"experiment={spec['experiment']}")
    cmd.append(f"hydra.sweep.dir=${{paths.log_dir}}/sweeps/{name}")
    cmd += [f"{key}={_values(value)}" for key, value in (spec.get("params") or {}).items()]
    cmd += [str(item) for item in spec.get("overrides") or []]
    return cmd + list(extra)


def _values(value) -> str:
    """A YAML list or a comma string as Hydra's sweep syntax."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a name in sweeps/ (without .yaml) or a path to a sweep YAML")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_intermixed_args(argv)
    cmd = sweep_command(sweep_file(args.sweep), args.overrides)
    print(shlex.join(cmd), flush=True)
    return 0 if args.dry_run else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
