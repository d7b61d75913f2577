"""Pin the chart to released images: registry, tag and each image's digest, plus the chart's
version and appVersion. The release workflow runs it on the checked-out chart before
``helm package``, so the published chart pulls exactly the images that release built.

    python3 .github/scripts/pin_images.py --chart charts/urbanfabric --version 0.2.0 \
        --registry ghcr.io/owner --digests DIR

DIR holds one file per image, named as the chart's ``images`` keys, each holding that image's
``sha256:<64 hex>`` digest (what docker/build-push-action reports). Standard library only:
values.yaml and Chart.yaml are edited line by line so their comments stay. Exit 2, naming the
image or the flag, on bad input; nothing is written then.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?$")
REGISTRY = re.compile(r"^[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9._-]+)*$")


class PinError(ValueError):
    pass


def chart_images(values_text: str) -> list[str]:
    """The keys of the top-level ``images:`` map of values.yaml (two-space indented)."""
    block = re.search(r"^images:\n((?:  .*\n|\s*#.*\n)+)", values_text, re.MULTILINE)
    if not block:
        raise PinError("values.yaml: no top-level images: map")
    return re.findall(r"^  ([a-z][a-z0-9-]*):", block.group(1), re.MULTILINE)


def read_digests(folder: Path, images: list[str]) -> dict[str, str]:
    digests = {}
    for name in images:
        path = folder / name
        if not path.is_file():
            raise PinError(f"--digests: no digest for image {name!r} ({path} is missing)")
        digest = path.read_text().strip()
        if not DIGEST.match(digest):
            raise PinError(f"--digests: image {name!r}: {digest!r} is not sha256:<64 hex>")
        digests[name] = digest
    extra = sorted(p.name for p in folder.iterdir() if p.name not in images)
    if extra:
        raise PinError(f"--digests: {', '.join(extra)} are not images of the chart ({', '.join(images)})")
    return digests


def _replace_one(text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str], what: str) -> str:
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise PinError(f"{what} not found")
    return new


def pin_values(text: str, registry: str, version: str, digests: dict[str, str]) -> str:
    """values.yaml with image.registry, image.tag and image.digests set."""
    block = "".join(f"\n    {name}: \"{digest}\"" for name, digest in digests.items())
    text = _replace_one(text, r"^(image:\n(?:(?:  .*|\s*#.*)\n)*?  registry: )\"[^\"]*\"",
                        rf'\g<1>"{registry}"', "values.yaml: image.registry")
    text = _replace_one(text, r"^(image:\n(?:(?:  .*|\s*#.*)\n)*?  tag: )\"[^\"]*\"",
                        rf'\g<1>"{version}"', "values.yaml: image.tag")
    return _replace_one(text, r"^(image:\n(?:(?:  .*|\s*#.*)\n)*?  digests:) \{\}",
                        lambda m: m.group(1) + block, "values.yaml: image.digests: {}")


def pin_chart_yaml(text: str, version: str) -> str:
    text = _replace_one(text, r"^version: .*$", f"version: {version}", "Chart.yaml: version")
    return _replace_one(text, r"^appVersion: .*$", f'appVersion: "{version}"', "Chart.yaml: appVersion")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", type=Path, required=True)
    parser.add_argument("--version", required=True, help="release version, e.g. 0.2.0 (no leading v)")
    parser.add_argument("--registry", required=True, help="registry prefix of the images, e.g. ghcr.io/owner")
    parser.add_argument("--digests", type=Path, required=True, help="folder with one digest file per image")
    args = parser.parse_args(argv)
    values_path, chart_path = args.chart / "values.yaml", args.chart / "Chart.yaml"
    try:
        if not VERSION.match(args.version):
            raise PinError(f"--version: {args.version!r} is not a semantic version like 0.2.0")
        if not REGISTRY.match(args.registry):
            raise PinError(f"--registry: {args.registry!r} is not a lower-case registry prefix like ghcr.io/owner")
        if not values_path.is_file() or not chart_path.is_file():
            raise PinError(f"--chart: {args.chart} has no values.yaml and Chart.yaml")
        if not args.digests.is_dir():
            raise PinError(f"--digests: {args.digests} is not a folder")
        values = values_path.read_text()
        digests = read_digests(args.digests, chart_images(values))
        new_values = pin_values(values, args.registry, args.version, digests)
        new_chart = pin_chart_yaml(chart_path.read_text(), args.version)
    except PinError as exc:
        print(f"pin_images: {exc}", file=sys.stderr)
        return 2
    values_path.write_text(new_values)
    chart_path.write_text(new_chart)
    print(f"{args.chart}: {len(digests)} images pinned at {args.registry}/…:{args.version}@sha256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
