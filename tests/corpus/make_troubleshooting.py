"""Render README.md's Troubleshooting section from the broken-input corpus (tests/test_corpus.py and
tests/test_corpus_hardening.py).

    python tests/corpus/make_troubleshooting.py    # rewrite the section at the end of README.md

Each row is a corpus case: a fragment of the message the command prints (checked by the corpus
test against the real output) and what to do (the message's own `fix:` line where it stops)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Troubleshooting"
GROUPS = {"graph": "Graphs (`python -m analyze.info GRAPH`, `train.py`)",
          "dataset": "Datasets (`train.py`)",
          "checkpoint": "Checkpoints (`train.py -r / -t`)",
          "config": "Run configs (`train.py -c`, `-u`)",
          "command": "Command lines (`train.py`, `distill.py`, `predict.py`, `analyze.*`)",
          "labels": "Labels and splits (`train.py`, `--test-only`)",
          "files": "Files and runs (`predict.py -o`, `train.py -r`, `--auto-resume`, Ctrl-C)",
          "resources": "Resource limits and weights files"}


def all_cases() -> list:
    """Every corpus case, in the order the README lists them."""
    sys.path.insert(0, str(ROOT))
    from tests.test_corpus import CASES
    from tests.test_corpus_hardening import CASES as HARDENING

    return [*CASES, *HARDENING]


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render(cases) -> str:
    lines = [HEADING, "",
             "Every message below comes from a file in the broken-input corpus (`pytest -m corpus` runs each",
             "one through the command line). Commands stop with exit code 2 (130 after Ctrl-C) and print "
             "`error: FILE, row/id: message`",
             "and a `fix:` line; add `--debug` for the traceback. Inputs marked *(warning)* are repaired (the",
             "message is printed) and *(accepted)* ones train as they are.", ""]
    for group, title in GROUPS.items():
        lines += [f"### {title}", "", "| what you see | what to do |", "|---|---|"]
        for case in (c for c in cases if c.group == group):
            note = "" if case.stops else " *(warning)*" if case.warns else " *(accepted)*"
            lines.append(f"| {_code(case.see)}{note} | {case.do} |")
        lines.append("")
    return "\n".join(lines)


def section_span(readme: str) -> tuple[int, int] | None:
    """Where the section is: from its heading to the next `## ` heading (or the end)."""
    start = readme.find("\n" + HEADING + "\n")
    if start < 0:
        return None
    end = readme.find("\n## ", start + 1)
    return start + 1, (end + 1 if end >= 0 else len(readme))


def readme_section(readme: str) -> str:
    """The section as rendered: without the blank line that separates it from a following section."""
    span = section_span(readme)
    return readme[span[0]:span[1]].rstrip("\n") + "\n" if span else ""


def main() -> None:
    cases = all_cases()
    path = ROOT / "README.md"
    readme = path.read_text()
    span = section_span(readme)
    if span:
        following = readme[span[1]:]
        readme = readme[:span[0]] + render(cases) + ("\n" + following if following else "")
    else:
        readme = readme.rstrip("\n") + "\n\n" + render(cases)
    path.write_text(readme)
    print(f"{path}: Troubleshooting section {'rewritten' if span else 'appended'} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
