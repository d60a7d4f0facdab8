"""One package per chapter of the book, each defined in one place: its `CHAPTER` record.

A chapter is `book/<name>.md` (prose and calls into the package), one line of `_toc.yml`, and the
package `optim_hunter.chapters.<name>`: its `__init__.py` holds the `Chapter` record (which models
it loads, whether it runs the language model, which chapters' cached results it reads, how long it
takes) and its modules hold the studies (sections returning result objects), the claims they
declare and their figures. The executor (`optim_hunter.book.book_executor`), the per-chapter cache
keys (`optim_hunter.book.chapter_cache`), the claims checks and the tests read the records through
`records()`; nothing else names a chapter's models or settings.

A chapter's `__init__.py` holds the record only, so reading every record imports no study.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from optim_hunter.report import claims

# The run settings a language-model chapter's outputs depend on (its cache key holds them).
LLM_SETTINGS = ("model", "contrasts", "device", "dtype")
BOOK_DIR = "book"


@dataclasses.dataclass(frozen=True)
class Chapter:
    """What the book needs to know of a chapter to execute it.

    `name`: the chapter is `book/<name>.md` and the package `optim_hunter.chapters.<name>`.
    `loads`: the zoo models it loads (their other training seeds come with them; "*": every model
    some chapter of the book loads). `language_model`: it loads $OPTIM_HUNTER_MODEL and the
    contrasts (which it then loads too when they are zoo models), and its outputs depend on them.
    `reads`: run settings its outputs depend on besides (`LLM_SETTINGS` names them). `after`: the
    chapters whose cached results it reads, executed first so the work is done once. `estimate`:
    seconds on one thread of the book's 2-core machine, full profile, beside another task (only the
    order of the work depends on it).
    """

    name: str
    loads: tuple[str, ...] = ()
    language_model: bool = False
    reads: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    estimate: float = 60.0

    def __post_init__(self) -> None:
        unknown = [s for s in self.reads if s not in LLM_SETTINGS]
        if unknown:
            raise ValueError(f"chapter {self.name}: reads {unknown}; a chapter reads some of {', '.join(LLM_SETTINGS)}")

    @property
    def doc(self) -> str:
        """The chapter's docname (its path in the book, without the suffix)."""
        return f"{BOOK_DIR}/{self.name}"

    @property
    def package(self) -> str:
        return f"{__name__}.{self.name}"

    @property
    def settings(self) -> tuple[str, ...]:
        """The run settings its outputs depend on (the parts of its cache key beyond the profile and code)."""
        read = LLM_SETTINGS if self.language_model else self.reads
        return tuple(s for s in LLM_SETTINGS if s in read)

    def claims(self) -> dict[str, claims.ClaimSpec]:
        """The claims the chapter's package declares, by id (its modules imported first)."""
        self.modules()
        return {cid: spec for cid, spec in claims.declared().items()
                if spec.module == self.package or spec.module.startswith(f"{self.package}.")}

    def modules(self) -> list[str]:
        """The chapter package's modules (its studies), imported."""
        package = importlib.import_module(self.package)
        names = [m.name for m in pkgutil.walk_packages(package.__path__, f"{self.package}.")]
        for name in names:
            importlib.import_module(name)
        return names


def records() -> dict[str, Chapter]:
    """Every chapter package's record, by docname (`book/<name>`)."""
    out = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            continue
        record = getattr(importlib.import_module(f"{__name__}.{info.name}"), "CHAPTER", None)
        if not isinstance(record, Chapter) or record.name != info.name:
            raise TypeError(f"optim_hunter.chapters.{info.name} must define CHAPTER = Chapter({info.name!r}, ...)")
        out[record.doc] = record
    return out


def record(doc: str) -> Chapter:
    """The record of chapter `doc` (a docname); a page without a package (a page of prose, or a
    chapter outside this package) loads nothing and reads no setting."""
    return records().get(doc) or Chapter(doc.rsplit("/", 1)[-1])
