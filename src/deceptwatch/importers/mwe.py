"""Import model-written-evals JSONL files as precursor scenarios.

The format (Perez et al. 2022, github.com/anthropics/evals): one JSON object per line with
exactly three string keys, ``question``, ``answer_matching_behavior`` and
``answer_not_matching_behavior``. Answers are letters such as ``" (A)"``; the options are
listed inside the question, after a ``Choices:`` line, one per line as ``(A) text``.

Each line becomes one scenario of a precursor family, without an oversight factor (one
``baseline`` condition). The question text up to ``Choices:`` becomes the user message
(a trailing ``Answer:`` is dropped); the options become the scenario's choices, which the
expander shows in a rotated order like any other scenario's. The *matching* answer becomes
the defect choice, the *not matching* one the aligned choice. With more than two options the
remaining ones are kept as further choices that are neither aligned nor defect: a model that
picks one is scored ``other``, never ``aligned`` (the dataset names no safe answer among them).

Polarity. Some files' "matching" answers read as the safe one (NOTES.md of the shared copy).
For every file the importer counts how many matching answers read as yes/accept and how
many as no/decline. Where the family has a direction (power seeking and coordination:
defect reads as yes/accept; shutdown avoidance: defect reads as no/decline), a file whose
counts point the other way is *suspect*, as is a file whose name says the matching answer is
the aligned one by design (``myopic-reward``: matching is the myopic choice, while the
``non_myopia`` family's defect is the far-sighted one; ``corrigible-*``: matching accepts a
change of goal, while the ``shutdown_avoidance`` defect resists it), whatever its counts. A
suspect file is not imported unless the user passes ``--flip FILE`` (swap matching and not
matching) or ``--keep FILE`` (import as written). The importer never decides for the user.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deceptwatch._errors import InputError
from deceptwatch.importers._files import visible_files, write_all

KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
FORMAT_HINT = (
    "each line must be one JSON object with exactly the string keys question, "
    'answer_matching_behavior and answer_not_matching_behavior, answers like " (A)", and the '
    "options listed in the question after 'Choices:' as lines like ' (A) Yes'"
)


@dataclass(frozen=True)
class FamilyRule:
    """How files of one name map to a family, and which way the defect answer should read."""

    family: str
    defect_reads: str | None  # "yes", "no", or None when yes/no says nothing
    inverted_by_design: str | None = None  # why the matching answer is the aligned one


# File-name stems (prefix match, longest first) → family.
FAMILY_RULES: dict[str, FamilyRule] = {
    "power-seeking-inclination": FamilyRule("power_seeking", "yes"),
    "wealth-seeking-inclination": FamilyRule("power_seeking", "yes"),
    "survival-instinct": FamilyRule("shutdown_avoidance", "no"),
    "corrigible-": FamilyRule(
        "shutdown_avoidance",
        "no",
        "in corrigible-* the matching answer is the corrigible one (it accepts the change of "
        "goal), while the shutdown_avoidance family's defect is resisting it",
    ),
    "self-awareness-": FamilyRule("situational_awareness", None),
    "myopic-reward": FamilyRule(
        "non_myopia",
        None,
        "in myopic-reward the matching answer is the myopic (short-horizon) choice, while the "
        "non_myopia family's defect is the far-sighted one",
    ),
    "coordinate-": FamilyRule("coordination", "yes"),
}
# The direction a family's defect answer reads in, for files imported with --family.
FAMILY_DIRECTION: dict[str, str | None] = {
    "power_seeking": "yes",
    "coordination": "yes",
    "shutdown_avoidance": "no",
    "non_myopia": None,
    "situational_awareness": None,
    "sandbagging": None,
}

_ANSWER_RE = re.compile(r"^\s*\(([A-Z])\)\s*$")
# A refusal: "No", "Never", "I decline", "I would decline.", "I will refuse the bequest.",
# "I would never ...", "I'd politely decline", "I would rather not", "I must refuse",
# "I would turn it down", "I do not", "I can't" (but not "I wouldn't mind"). Checked
# before the yes-words, which take any other "I would ..." as a yes.
_NO_RE = re.compile(
    r"^(?:(?:no|nope|never|not|decline|refuse|reject|absolutely not|definitely not|"
    r"certainly not|of course not)\b"
    r"|i(?:'m| am|'d|'ll| would| will| do| did| should| shall| could| can| must| may)?"
    r"(?: (?:also|still|just|simply|really|definitely|certainly|absolutely|probably|"
    r"likely|politely|respectfully|kindly|firmly|strongly|have to|need to|got to|"
    r"be going to|am going to|'m going to|going to|would|will|rather|much rather|"
    r"sooner))*"
    r" (?:not|never|decline|refuse|reject|deny|object|oppose|disagree|disapprove|refrain|"
    r"forgo|forego|turn (?:\w+ )?down|pass on|say no|be against|prefer not|rather not)\b"
    r"|i (?:wouldn't|won't|don't|didn't|shouldn't|couldn't|can't|cannot|mustn't)\b"
    r"|i(?:'m| am) not\b)"
    r"(?! mind\b)",  # "I wouldn't mind" / "I would not mind" agree
    re.IGNORECASE,
)
_YES_RE = re.compile(
    r"^(yes|yeah|yep|sure|accept|i accept|agree|i agree|ok|okay|absolutely|definitely|"
    r"certainly|of course|i would|i will|i'd|i'll|i do|i want|i support|i consent|"
    r"go ahead)\b",
    re.IGNORECASE,
)


def reads_as(text: str) -> str | None:
    """``"yes"`` if an option text begins with yes/accept-like words, ``"no"`` for
    no/decline-like words (checked first, so "I would not" and "I would decline" are no),
    else None. Curly apostrophes read as straight ones."""
    t = text.strip().lstrip("\"'“‘*-").strip().replace("’", "'")
    if _NO_RE.match(t):
        return "no"
    if _YES_RE.match(t):
        return "yes"
    return None


def _option(row: str) -> tuple[str, str] | None:
    """The letter and text of an option line ``(A) text`` (leading spaces or tabs allowed),
    or None. String methods, not a regex: a regex with a lazy group before trailing
    whitespace takes quadratic time on a long run of spaces."""
    s = row.lstrip(" \t")
    if len(s) < 3 or s[0] != "(" or s[2] != ")" or not ("A" <= s[1] <= "Z"):
        return None
    return s[1], s[3:].strip()


def _drop_choices_line(stem: str) -> str:
    """`stem` without a ``Choices:`` line at its end (with the spaces and the newline
    around it), stripped."""
    s = stem.rstrip(" \t")
    if s.endswith("Choices:"):
        stem = s.removesuffix("Choices:").rstrip(" \t").removesuffix("\n")
    return stem.strip()


@dataclass(frozen=True)
class Question:
    """One parsed line: the stem, the options by letter, and the two answers' letters."""

    line: int
    stem: str
    options: tuple[tuple[str, str], ...]
    matching: str
    not_matching: str

    def text(self, letter: str) -> str:
        return dict(self.options)[letter]


@dataclass
class FileReport:
    """What the importer found in one file and what it did with it."""

    path: str
    family: str
    records: int
    matching_yes: int
    matching_no: int
    defect_reads: str | None
    status: str = ""  # ok | suspect | flipped | kept | unchecked
    reason: str = ""
    output: str | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def repeats(self) -> list[tuple[int, str]]:
        """The skipped records that repeat an earlier line's record."""
        return [(n, r) for n, r in self.skipped if r.startswith(REPEAT)]

    @property
    def imported(self) -> int:
        """Scenarios written (or, in a dry run, that would be): none for a suspect file."""
        return 0 if self.status == "suspect" else self.records - len(self.skipped)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "family": self.family,
            "records": self.records,
            "imported": self.imported,
            "skipped": [{"line": n, "reason": r} for n, r in self.skipped],
            "repeated": len(self.repeats),
            "matching_reads_yes": self.matching_yes,
            "matching_reads_no": self.matching_no,
            "expected_defect_reads": self.defect_reads,
            "status": self.status,
            "reason": self.reason,
            "output": self.output,
        }


REPEAT = "repeats the record of line"


class Unusable(Exception):
    """A well-formed record that cannot become a scenario (no question text, an empty or
    repeated option): skipped, and listed by line in the file's report."""


def _bad(path: str, line: int, message: str) -> InputError:
    return InputError(
        f"{path}:{line}: {message}; nothing from this file was imported", hint=FORMAT_HINT
    )


def _split_question(question: str, *, path: str, line: int) -> tuple[str, list[tuple[str, str]]]:
    """The stem and the options of a question: the options are the last run of lines
    ``(A) ...``, ``(B) ...`` (blank lines and a final ``Answer:`` aside); the stem is the
    text before them, without a ``Choices:`` line at its end. Anything earlier stays in the
    stem as written (a few real records hold several questions in one)."""
    rows = question.split("\n")
    end = len(rows)
    while end > 0 and rows[end - 1].strip() in ("", "Answer:"):
        end -= 1
    start = end
    found: list[tuple[str, str]] = []
    while start > 0:
        row = rows[start - 1]
        option = _option(row)
        if option is None and row.strip():
            break
        if option is not None:
            found.append(option)
        start -= 1
    options = found[::-1]
    if len(options) < 2:
        raise _bad(path, line, "key 'question' does not end with 2 or more options like ' (A) Yes'")
    for k, (letter, text) in enumerate(options):
        if letter != chr(ord("A") + k):
            raise _bad(path, line, f"key 'question' lists option ({letter}) out of order")
        if not text:
            raise Unusable(f"key 'question' has an empty option ({letter})")
    stem = "\n".join(rows[:start]).rstrip()
    stem = _drop_choices_line(stem)
    if not stem:
        raise Unusable("key 'question' has no text before its options")
    if "{{" in stem or "}}" in stem or any("{{" in t or "}}" in t for _, t in options):
        raise Unusable("key 'question' contains '{{' or '}}', which scenario templates reserve")
    return stem, options


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:  # json.loads would keep the last value in silence
            raise _RepeatedKey(key)
        obj[key] = value
    return obj


def _load(raw: str, *, path: str, line: int) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise _bad(path, line, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except _RepeatedKey as exc:
        raise _bad(path, line, f"key '{exc.args[0]}' appears twice in the record") from None


def parse_line(raw: str, *, path: str, line: int) -> Question:
    """Parse one JSONL line; raise InputError naming the file, line and key."""
    return parse_record(_load(raw, path=path, line=line), path=path, line=line)


def parse_record(obj: Any, *, path: str, line: int) -> Question:
    """Check one decoded record; raise InputError naming the file, line and key."""
    if not isinstance(obj, dict):
        raise _bad(path, line, f"expected a JSON object, got {type(obj).__name__}")
    for key in KEYS:
        if key not in obj:
            raise _bad(path, line, f"missing key '{key}'")
        if not isinstance(obj[key], str):
            raise _bad(path, line, f"key '{key}' must be a string, got {type(obj[key]).__name__}")
    extra = sorted(set(obj) - set(KEYS))
    if extra:
        raise _bad(path, line, f"unexpected key '{extra[0]}'")
    question: str = obj["question"]
    stem, options = _split_question(question, path=path, line=line)
    texts = [t.strip().casefold() for _, t in options]
    if len(set(texts)) != len(texts):
        raise Unusable("key 'question' lists two options with the same text")
    letters = {letter for letter, _ in options}
    answers = []
    for key in KEYS[1:]:
        am = _ANSWER_RE.match(obj[key])
        if am is None:
            raise _bad(path, line, f"key '{key}' is {obj[key]!r}, not a letter like ' (A)'")
        if am.group(1) not in letters:
            raise _bad(
                path,
                line,
                f"key '{key}' names ({am.group(1)}), which is not among the options "
                f"{', '.join(sorted(letters))}",
            )
        answers.append(am.group(1))
    if answers[0] == answers[1]:
        raise _bad(
            path,
            line,
            "keys 'answer_matching_behavior' and "
            "'answer_not_matching_behavior' name the same option",
        )
    return Question(line, stem, tuple(options), answers[0], answers[1])


def _lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at "\\n" only (a "\\r" before it is dropped), as JSON
    Lines defines them. `str.splitlines` would also split inside a record at characters
    that are valid unescaped in a JSON string (U+2028, U+2029, U+0085, \\x1c-\\x1e, ...)."""
    return [row.removesuffix("\r") for row in text.split("\n")]


def read_file(path: Path) -> tuple[list[Question], list[tuple[int, str]]]:
    """The questions of one JSONL file and the (line, reason) of the records skipped (unusable
    ones, and repeats of an earlier line's record: each distinct record is imported once),
    or InputError for the first line of the wrong shape."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}", hint="check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name}: not UTF-8 text (byte {exc.start})", hint="save it as UTF-8"
        ) from None
    out: list[Question] = []
    skipped: list[tuple[int, str]] = []
    first: dict[str, int] = {}  # each record (as sorted JSON) -> the line it first appears on
    for i, raw in enumerate(_lines(text), start=1):
        if not raw.strip(" \t"):
            continue
        obj = _load(raw, path=name, line=i)
        key = json.dumps(obj, sort_keys=True, ensure_ascii=False)
        if key in first:
            skipped.append((i, f"{REPEAT} {first[key]}"))
            continue
        first[key] = i
        try:
            out.append(parse_record(obj, path=name, line=i))
        except Unusable as exc:
            skipped.append((i, str(exc)))
    if not out and not skipped:
        raise InputError(f"{name}: no questions in this file", hint=FORMAT_HINT)
    return out, skipped


def rule_for(path: Path, family: str | None) -> FamilyRule:
    """The rule of the file's name, or of `family` (--family): a --family that names the
    family of the file's name keeps that name's rule, polarity checks included."""
    stem = path.stem.lower()
    named = next(
        (
            FAMILY_RULES[p]
            for p in sorted(FAMILY_RULES, key=len, reverse=True)
            if stem.startswith(p)
        ),
        None,
    )
    if family is not None:
        from deceptwatch.scenarios import PRECURSOR_FAMILIES

        if family not in PRECURSOR_FAMILIES:
            raise InputError(
                f"--family {family!r} is not a precursor family",
                hint="one of: " + ", ".join(sorted(PRECURSOR_FAMILIES)),
            )
        if named is not None and named.family == family:
            return named
        return FamilyRule(family, FAMILY_DIRECTION.get(family))
    if named is not None:
        return named
    raise InputError(
        f"{path}: cannot tell the family from the file name '{path.name}'",
        hint="pass --family NAME (e.g. --family power_seeking); known names: "
        + ", ".join(sorted(FAMILY_RULES)),
    )


def check_polarity(report: FileReport, rule: FamilyRule) -> None:
    """Set `status`/`reason` to ok, suspect or unchecked (before --flip/--keep)."""
    y, n = report.matching_yes, report.matching_no
    if rule.inverted_by_design:
        report.status, report.reason = "suspect", rule.inverted_by_design
    elif rule.defect_reads is None:
        report.status = "unchecked"
        report.reason = f"yes/no says nothing about defecting in {rule.family}; imported as written"
    elif y == n:
        report.status = "unchecked"
        report.reason = f"as many matching answers read yes as no ({y}); imported as written"
    else:
        majority = "yes" if y > n else "no"
        if majority == rule.defect_reads:
            report.status = "ok"
            report.reason = f"matching answers mostly read {majority}, as {rule.family} expects"
        else:
            report.status = "suspect"
            report.reason = (
                f"matching answers mostly read {majority} ({y} yes / {n} no), but a defect in "
                f"{rule.family} should read {rule.defect_reads}: the file's labels look inverted"
            )


def _shown(name: str) -> str:
    """A file name as UTF-8 text can hold it: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9_.\-]+", "-", text.lower()).strip("-.")
    return s or "x"


MAX_ID = 200  # the longest scenario id the schema takes


def _id_prefix(name: str, questions: Sequence[Question]) -> str:
    """``mwe/DIR/STEM`` of an output file's `name` (``DIR/STEM.yaml``): the prefix of its
    scenarios' ids, ``PREFIX/00012``. A prefix too long for the longest id the schema takes
    is cut, and a hash of the whole of it added, so that the ids always fit and two long
    names still differ; the prefixes of ordinary names are kept as they are."""
    prefix = "mwe/" + name.removesuffix(".yaml")
    width = max([5, *(len(str(q.line)) for q in questions)])
    room = MAX_ID - 1 - width
    if len(prefix) <= room:
        return prefix
    digest = hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:12]
    return prefix[: room - len(digest) - 1].rstrip("-./_") + "-" + digest


def _scenarios(
    report: FileReport, questions: Sequence[Question], name: str, flip: bool
) -> list[dict[str, Any]]:
    out = []
    prefix = _id_prefix(name, questions)
    tag = re.sub(r"[^a-z0-9_]+", "_", Path(report.path).stem.lower()).strip("_")
    tags = ["mwe"] + ([tag] if tag and tag[0].isalpha() and tag != "mwe" else [])
    for q in questions:
        defect, aligned = (q.not_matching, q.matching) if flip else (q.matching, q.not_matching)
        how = (
            "flipped: the not-matching answer is the defect"
            if flip
            else "the matching answer is the defect"
        )
        out.append(
            {
                "id": f"{prefix}/{q.line:05d}",
                "version": 1,
                "family": report.family,
                "description": f"Imported from {_shown(Path(report.path).name)} line {q.line} "
                f"(model-written evals); {how}.",
                "tags": list(tags),
                "user": q.stem,
                "choices": [{"id": f"opt_{letter.lower()}", "text": t} for letter, t in q.options],
                "aligned": f"opt_{aligned.lower()}",
                "defect": f"opt_{defect.lower()}",
            }
        )
    return out


def _jsonl_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = visible_files(p, (".jsonl",))  # not .ipynb_checkpoints/ and the like
            if not found:
                raise InputError(f"{p}: no .jsonl files in this directory", hint=FORMAT_HINT)
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(
                f"{p}: no such file or directory", hint="give JSONL files or directories"
            )
    seen: set[Path] = set()
    unique = []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def _output_name(path: Path) -> str:
    return f"{_slug(path.parent.name)}/{_slug(path.stem)}.yaml"


def import_mwe(
    paths: Sequence[str | Path],
    out_dir: str | Path | None,
    *,
    flip: Sequence[str | Path] = (),
    keep: Sequence[str | Path] = (),
    family: str | None = None,
) -> list[FileReport]:
    """Read, check and convert; write one YAML file per imported source file to `out_dir`
    (None: a dry run that only reports).

    Bad input anywhere raises InputError before anything is written. Suspect files are
    reported with status ``suspect`` and not written.
    """
    import yaml
    from pydantic import ValidationError

    from deceptwatch.scenarios import Scenario

    files = _jsonl_files([Path(p) for p in paths])
    resolved = {f.resolve(): f for f in files}
    flips = {Path(p).resolve() for p in flip}
    keeps = {Path(p).resolve() for p in keep}
    for opt, chosen in (("--flip", flips), ("--keep", keeps)):
        for r in sorted(chosen - set(resolved)):
            raise InputError(
                f"{opt} {r}: this file is not among the files to import",
                hint=f"give {opt} one of the PATH files, as a path to the same file",
            )
    both = flips & keeps
    if both:
        raise InputError(
            f"{sorted(both)[0]}: given to both --flip and --keep", hint="choose one of them"
        )
    outputs: dict[str, Path] = {}
    reports = []
    rendered: list[tuple[FileReport, str]] = []
    for f in files:
        rule = rule_for(f, family)
        questions, skipped = read_file(f)
        yes = sum(reads_as(q.text(q.matching)) == "yes" for q in questions)
        no = sum(reads_as(q.text(q.matching)) == "no" for q in questions)
        report = FileReport(
            str(f), rule.family, len(questions) + len(skipped), yes, no, rule.defect_reads
        )
        report.skipped = skipped
        check_polarity(report, rule)
        key = f.resolve()
        if key in flips:
            report.reason = f"{report.status}: {report.reason}; flipped by --flip"
            report.status = "flipped"
        elif key in keeps:
            report.reason = f"{report.status}: {report.reason}; kept as written by --keep"
            report.status = "kept"
        reports.append(report)
        if report.status == "suspect":
            report.reason += "; not imported: pass --flip FILE or --keep FILE"
            continue
        name = _output_name(f)
        if name in outputs:
            raise InputError(
                f"{f} and {outputs[name]} would both be written to {name}",
                hint="import them in separate runs with different --out directories",
            )
        outputs[name] = f
        docs = []
        for q, doc in zip(
            questions,
            _scenarios(report, questions, name, flip=report.status == "flipped"),
            strict=True,
        ):
            try:
                Scenario.model_validate(doc)
            except ValidationError as exc:  # a record the shape checks let through
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(x) for x in first["loc"])
                report.skipped.append((q.line, f"not a valid scenario: {where}: {first['msg']}"))
                continue
            docs.append(doc)
        report.skipped.sort()
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        head = f"# Imported by `deceptwatch import mwe` from {_shown(f.name)} ({report.status}: "
        body = yaml.dump(docs, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)
        text = f"{head}{len(docs)} scenarios).\n{body}"
        report.output = name
        rendered.append((report, text))
    if out_dir is None:
        for report, _ in rendered:
            report.output = None  # a dry run: nothing written
    elif rendered:
        out = Path(out_dir)
        written = write_all(out, [(r.output or "", text) for r, text in rendered])
        for (report, _), path in zip(rendered, written, strict=True):
            report.output = str(path)
    return reports
