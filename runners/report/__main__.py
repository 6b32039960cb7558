"""`python -m runners.report <sweep dir> [<more> ...] [--out DIR]`: the report of a sweep, of several
together (each cell once), or of any folder of cell records."""

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.store import find_records, writable_folder, write_json
from runners.report import __doc__ as REPORT_DOC
from runners.report import build
from runners.report.tables import well_formed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.report", description=REPORT_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="sweep_dir",
                        help="a multirun folder (outputs/multiruns/...) or any folder of records; several "
                        "report together")
    parser.add_argument("--out", type=Path, help="where to write the report (default <sweep dir>/report); "
                        "the records are copied there too, so the folder is self-contained")
    args = parser.parse_args(argv)
    records, seen = [], set()
    for folder in args.sweep_dirs:
        found = [r for r in find_records(folder) if well_formed(r)]
        if not found:
            print(f"error: no cell records under {folder}: point at a multirun folder "
                  "(outputs/multiruns/<date>) or a results folder", file=sys.stderr)
            return 2
        records += [r for r in found if r.get("cell_id") not in seen]
        seen |= {r.get("cell_id") for r in found}
    if len(args.sweep_dirs) > 1 and not args.out:
        print("error: several sweeps report into one folder: name it with --out DIR", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dirs[0] / "report"
    try:
        writable_folder(out, "--out", alternative="")
        if args.out:
            for record in records:
                if record.get("status") == "done":  # the id is checked: a file name never comes from a record
                    write_json(out / "records" / f"{record['cell_id']}.json", record)
        made = build(records, out)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a folder where the report writes a file
        print(f"error: cannot write the report in {out} ({error.strerror}: {error.filename}); point --out at "
              "a writable folder with nothing in the way", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    print(f"report: {made['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
