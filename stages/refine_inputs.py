"""Stage refine_inputs@<dataset>: the part of the labeled split and of ``train`` the refinement reads.

    python stages/refine_inputs.py --labeled-ids data/splits/NAME/labeled.txt \
        --unlabeled-ids data/splits/NAME/unlabeled.txt --out data/refine_inputs/NAME.json

A record (busseg.pseudo.rounds.refinement_inputs) that is empty when ``pseudo.refine_rounds``
is 0 and holds the labeled ids, the unlabeled ids and the ``train`` section only where the
rounds use them. ``refine`` depends on it, so a ``label_ratio`` or ``train`` change re-runs
this cheap stage but the refinement only when its own inputs changed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard

from busseg.atomic import write_json
from busseg.config import from_dict
from busseg.data.split import read_id_list
from busseg.params_schema import PseudoParams
from busseg.pseudo.rounds import refinement_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--labeled-ids", "--unlabeled-ids", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    pseudo = params["pseudo"]
    options = from_dict(PseudoParams, {k: v for k, v in pseudo.items() if not isinstance(v, dict)}, "pseudo")
    record = refinement_inputs(options, read_id_list(args.labeled_ids), read_id_list(args.unlabeled_ids), params.get("train"))
    write_json(args.out, record)


if __name__ == "__main__":
    main_guard(main)
