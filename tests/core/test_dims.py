"""Every shape annotation in the package speaks the one vocabulary of optim_hunter.core.dims."""

import re
from pathlib import Path

from optim_hunter.core import dims

PACKAGE = Path(dims.__file__).parents[1]
ANNOTATION = re.compile(r"""\b(?:Float|Int|Bool|Shaped|Num|Real|Complex|UInt)\[[^,\[\]]+,\s*(["'])(.*?)\1\s*\]""")


def annotations() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for match in ANNOTATION.finditer(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(PACKAGE)), match.group(2)))
    return found


def test_the_scan_finds_annotations():
    found = annotations()
    assert len(found) > 100
    assert ("core/transformer.py", "batch pos d_model") in found


def test_names_in_sets_aside_sizes_and_prefixes():
    assert dims.names_in(" batch *pos #head _ 3 ... d_model+1") == ["batch", "pos", "head", "d_model"]


def test_every_dimension_name_is_in_the_vocabulary():
    unknown = sorted({f"{file}: {name!r} in {shape!r}" for file, shape in annotations()
                      for name in dims.names_in(shape) if name not in dims.DIMS})
    assert not unknown, "dimension names outside optim_hunter.core.dims.DIMS:\n" + "\n".join(unknown)
