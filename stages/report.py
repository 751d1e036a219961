"""Stage report: metrics/summary.json (dataset -> metric) and a markdown results table.

    python stages/report.py --eval metrics/eval --pseudo metrics/pseudo --refine metrics/refine --cross metrics/cross \
        --summary metrics/summary.json --table reports/summary.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard

from busseg.report import build_summary, cross_table, markdown_table
from busseg.atomic import write_json, write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--eval", "--pseudo", "--refine", "--cross", "--summary", "--table"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    summary = build_summary(args.eval, args.pseudo, list(params["datasets"]), args.refine)
    write_json(args.summary, summary)
    header = (
        f"# Results\n\nmethod `{params['train']['method']}`, label_ratio {params['label_ratio']}, "
        f"encoder {params['model']['encoder']}, {params['model']['image_size']} px, "
        f"pseudo labels `{params['pseudo']['backend']}`, {params['pseudo'].get('refine_rounds', 0)} refinement round(s)\n"
    )
    table = markdown_table(summary, header)
    cross = cross_table(args.eval, args.cross, list(params["datasets"]))
    if cross:
        table += "\n## Across datasets (train on the row, test on the column)\n\n" + cross
    write_text(args.table, table)
    print(table)


if __name__ == "__main__":
    main_guard(main)
