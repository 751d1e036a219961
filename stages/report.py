"""Stage report: metrics/summary.json (dataset -> metric), a markdown results table and
reports/index.html, the self-contained page with every result (busseg.report_html).

    python stages/report.py --eval metrics/eval --pseudo metrics/pseudo --refine metrics/refine --cross metrics/cross \
        --summary metrics/summary.json --table reports/summary.md \
        --train-live reports/train --warmup-live reports/warmup --pseudo-reports reports/pseudo \
        --eval-reports reports/eval --html reports/index.html
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard

from busseg.atomic import write_json, write_text
from busseg.report import build_summary, cross_matrix, cross_table, markdown_table
from busseg.report_html import ReportSources, build_report_html, read_dataset_material

FLAGS = (
    "--eval", "--pseudo", "--refine", "--cross", "--summary", "--table",
    "--train-live", "--warmup-live", "--pseudo-reports", "--eval-reports", "--html",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in FLAGS:
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    datasets = list(params["datasets"])
    summary = build_summary(args.eval, args.pseudo, datasets, args.refine)
    write_json(args.summary, summary)
    description = (
        f"method {params['train']['method']}, label_ratio {params['label_ratio']}, "
        f"encoder {params['model']['encoder']}, {params['model']['image_size']} px, "
        f"pseudo labels {params['pseudo']['backend']}, {params['pseudo'].get('refine_rounds', 0)} refinement round(s)"
    )
    header = (
        f"# Results\n\nmethod `{params['train']['method']}`, label_ratio {params['label_ratio']}, "
        f"encoder {params['model']['encoder']}, {params['model']['image_size']} px, "
        f"pseudo labels `{params['pseudo']['backend']}`, {params['pseudo'].get('refine_rounds', 0)} refinement round(s)\n"
    )
    table = markdown_table(summary, header)
    cross = cross_table(args.eval, args.cross, datasets)
    if cross:
        table += "\n## Across datasets (train on the row, test on the column)\n\n" + cross
    write_text(args.table, table)
    sources = ReportSources(args.train_live, args.warmup_live, args.pseudo_reports, args.eval_reports, args.refine)
    materials = [read_dataset_material(name, sources) for name in datasets]
    page = build_report_html("busseg results", description, summary, cross_matrix(args.eval, args.cross, datasets), materials)
    write_text(args.html, page)
    print(table)
    print(f"report: {args.html}")


if __name__ == "__main__":
    main_guard(main)
