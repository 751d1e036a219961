"""Importers that read public BUS dataset layouts into one sample stream.

An importer is called as ``importer(root, options, section=...)`` and returns a lazy
iterator of :class:`Sample` (a usable image/mask pair), :class:`Skip` (a pair that was
left out, with the reason) and :class:`Ignored` (a file that is part of no sample).

One module per kind, each documenting its layout next to its code and exporting its
entry as ``importers = {kind: function}``; this package merges them into
:data:`IMPORTERS` (as segmentation_models_pytorch merges its encoder families), and
:func:`get_importer` names the available kinds when asked for an unknown one:

=============  ===========================================================
``synthetic``  generated cases (:mod:`~busseg.data.importers.synthetic`)
``busbra``     BUS-BRA (:mod:`~busseg.data.importers.busbra`)
``stu``        STU-Hospital (:mod:`~busseg.data.importers.stu`)
``busi``       BUSI (:mod:`~busseg.data.importers.busi`)
``bus_uclm``   BUS-UCLM (:mod:`~busseg.data.importers.bus_uclm`)
``udiat``      UDIAT Dataset B (:mod:`~busseg.data.importers.udiat`)
``folder``     any ``images/`` + ``masks/`` pair (:mod:`~busseg.data.importers.folder`)
``auto``       detects one of the layouts above (:mod:`~busseg.data.importers.auto`)
``composite``  several sources as one dataset (:mod:`~busseg.data.importers.composite`)
=============  ===========================================================

What the kinds share (records, root checks, spec parsing, pairing, ids) is in
:mod:`~busseg.data.importers.base`. To add a kind: a module with its options dataclass,
its ``import_<kind>`` function (start with :func:`~busseg.data.importers.base.check_root`
and :func:`~busseg.data.importers.base.parse_options`, load pairs with
:func:`~busseg.data.importers.base.pair_and_load`) and ``importers``; merge it below
(and into ``composite.SOURCE_IMPORTERS``; into ``auto.DETECTED`` if its layout can be
recognised).

Every real kind (not ``synthetic``) accepts option ``limit``: keep only the first N ids
in sorted order (for quick runs); skipped ids count towards N. For ``composite`` it
keeps the first N samples and skips of the combined stream, after each source's own ``limit``.

Ids: every kind that takes ids from file names (``folder``, ``udiat``, ``bus_uclm``,
``busi``) passes them through :func:`sanitise_id` (leading/trailing spaces, newlines,
non-ASCII characters and a leading dot never reach a prepared file name); two names that
give one id keep distinct ids (:func:`~busseg.data.importers.base.unique_ids`).

Colour (one rule for every kind, :func:`busseg.imageio.classify_colour`): grey content
stored as RGB is read as is; greyscale content through a tinted grey map and/or with
small coloured overlays (calipers, body marks) is converted to luma and the sample is
marked ``tinted``; colour content (a colour Doppler box) is converted to luma too and
marked ``colour``. The prepare report lists both ("converted and listed", as the paper
evaluates BUSI's Doppler images; a user who wants them out filters on the list).

Reported, not read (:class:`Ignored`, listed in the prepare report): hidden files,
entries that are not image files, masks without an image, metadata CSV rows naming no
image, an unusable ``INFO.csv``.

What raises and what skips:

* raise :class:`~busseg.errors.ConfigError`: unknown kind, unknown or ill-typed option,
  missing ``root`` for a real kind;
* raise :class:`~busseg.errors.DataError` (when the importer is called, before any
  sample is read): ``root`` missing or without the expected folders/files (the message
  lists what was looked for), a metadata CSV that is unreadable or lacks columns;
* :class:`Skip` (during iteration): missing mask, image or metadata row, unreadable or
  corrupt file, non-binary mask, mask whose size differs from its image (for kinds
  without a resize rule), ambiguous pairing (one stem with several image files, or
  several masks where the kind does not merge them), unknown label value.
"""
from __future__ import annotations

from busseg.data.importers import auto, bus_uclm, busbra, busi, composite, folder, stu, synthetic, udiat
from busseg.data.importers.auto import detect_kind, import_auto
from busseg.data.importers.base import (
    DatasetSpec,
    Ignored,
    Importer,
    Record,
    Sample,
    Skip,
    lookup,
    merge_registries,
    parse_spec,
    sanitise_id,
)
from busseg.data.importers.bus_uclm import import_bus_uclm
from busseg.data.importers.busbra import import_busbra
from busseg.data.importers.busi import import_busi
from busseg.data.importers.composite import import_composite
from busseg.data.importers.folder import import_folder
from busseg.data.importers.stu import import_stu
from busseg.data.importers.synthetic import import_synthetic
from busseg.data.importers.udiat import import_udiat

IMPORTERS: dict[str, Importer] = merge_registries(
    auto.importers,
    bus_uclm.importers,
    busbra.importers,
    busi.importers,
    composite.importers,
    folder.importers,
    stu.importers,
    synthetic.importers,
    udiat.importers,
)
"""Importer of each dataset ``kind``."""


def get_importer(kind: str, *, section: str = "dataset") -> Importer:
    """The importer registered for ``kind``; ``section`` (e.g. ``datasets.busbra``) names
    the parameter in the :class:`~busseg.errors.ConfigError` raised for an unknown kind,
    which lists the available kinds."""
    return lookup(IMPORTERS, kind, section)


__all__ = [
    "IMPORTERS",
    "DatasetSpec",
    "Ignored",
    "Importer",
    "Record",
    "Sample",
    "Skip",
    "detect_kind",
    "get_importer",
    "import_auto",
    "import_bus_uclm",
    "import_busbra",
    "import_busi",
    "import_composite",
    "import_folder",
    "import_stu",
    "import_synthetic",
    "import_udiat",
    "parse_spec",
    "sanitise_id",
]
