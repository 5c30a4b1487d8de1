"""A campaign's CSV checked completely before anything is stored: every problem, by line.

The file is streamed: bytes are decoded incrementally, split into physical lines and parsed
with the csv module, so only the checked rows (not the file) are held in memory.

What is reported, and where:

- Line numbers are physical lines as an editor shows them (1 is the first line; CR, LF and
  CRLF each end a line). A row is reported at the line it *starts* on, so a quoted value
  spanning lines 4-6 makes the next row line 7. Problems of the header are at its line.
- Invalid UTF-8 is reported at the line holding the offending byte, and stops the check
  (nothing after it can be trusted to be text). So does a physical line over
  ``MAX_LINE_CHARS``: the file is not a CSV one can fix line by line.
- A header problem (a missing column, a duplicate name) does not stop the check: rows are
  still checked against the columns that exist, so one upload lists everything to fix.
- Blank lines are skipped, and so are rows whose every value is blank (``,,``): that is how
  spreadsheets export the empty rows a user sees below the data.
- Header names are stripped of surrounding spaces; values are kept as written, but a value
  of spaces only counts as empty. Recipients and senders are compared stripped.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from jinja2 import TemplateError, nodes

from nudge.models.campaigns import MAX_PROBLEMS, SEPARATORS, CampaignCreate, CsvProblem
from nudge.models.messages import AnyMessage
from nudge.models.phones import e164
from nudge.models.template_context import message_sources
from nudge.models.validation import Loc

# The very environment templates are compiled with (no public parse exists there), so the
# columns found are those a render would read.
from nudge.templating import _env

MAX_FIELD_CHARS = 10_000
MAX_COLUMNS = 200
# A physical line that long cannot be a row of valid fields; stops an unbounded buffer.
MAX_LINE_CHARS = MAX_COLUMNS * (MAX_FIELD_CHARS + 3)
NOT_UTF8 = "not UTF-8 (save the file as UTF-8)"
EMPTY_PARAMETER = "empty value for a template parameter"

_ROW = "row"
_BREAK = re.compile(r"(\r\n|\r|\n)")
_HAS_BREAK = re.compile(r"[\r\n]")
_NEVER_CLOSED = 'a quoted value is never closed (a closing " is missing)'


@dataclass(frozen=True, slots=True)
class CheckedRow:
    line: int  # the physical line the row starts on
    recipient: str  # E.164 for phones, the external id (stripped) otherwise
    sender: str | None  # the sender column's value (stripped); None without sender_column
    values: dict[str, str]  # every column of the row, by header name, as written


@dataclass
class CheckedCsv:
    header: list[str]
    rows: list[CheckedRow] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first's line)
    problems: list[CsvProblem] = field(default_factory=list)  # the first MAX_PROBLEMS
    total_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.total_problems == 0

    def add_problem(self, line: int, column: str | None, reason: str) -> None:
        # Only the first problems are kept: a wrong separator makes every row one.
        self.total_problems += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(CsvProblem(line=line, column=column, reason=reason))


class RowUseProblem(ValueError):
    """A template uses ``row`` other than as ``row.<name>`` or ``row["<name>"]`` (e.g.
    ``row[variable]`` or ``row|length``), so the columns it reads cannot be known."""

    def __init__(self, path: Loc, lineno: int, what: str) -> None:
        self.path = path
        where = ".".join(str(part) for part in path)
        super().__init__(
            f"{where}: {what}; a template may read a column only as row.<column> or"
            f' row["<column>"] (template line {lineno})'
        )


# --- the columns a message reads -------------------------------------------------------


def _is_row(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == _ROW and node.ctx == "load"


def _column_of(node: nodes.Node) -> str | None:
    """The column ``row.<name>`` or ``row["<name>"]`` reads; None for anything else."""
    if isinstance(node, nodes.Getattr) and _is_row(node.node):
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and _is_row(node.node)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _misuse(node: nodes.Node, called: set[int]) -> str | None:
    """What is wrong with this use of ``row``, if it is one."""
    if isinstance(node, nodes.Getattr | nodes.Getitem) and _is_row(node.node):
        if id(node) in called:
            return "it calls a method of row"  # row.get("x") reads no column named get
        return None if _column_of(node) is not None else "row[...] with a computed name"
    if isinstance(node, nodes.Name) and node.name == _ROW:
        return "row on its own" if node.ctx == "load" else "it gives row a new value"
    if isinstance(node, nodes.NSRef) and node.name == _ROW:
        return "it gives row a new value"
    return None


def _template_columns(source: str, path: Loc) -> dict[str, Loc]:
    try:
        tree = _env.parse(source)
    except TemplateError as exc:  # saved messages compile; a constructed one may not
        raise RowUseProblem(path, getattr(exc, "lineno", None) or 1, str(exc)) from None
    found: dict[str, Loc] = {}
    called: set[int] = set()
    stack: list[nodes.Node] = [tree]  # a stack, not recursion: templates may nest deeply
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Call):
            called.add(id(node.node))
        what = _misuse(node, called)
        if what is not None:
            raise RowUseProblem(path, node.lineno, what)
        column = _column_of(node)
        if column is not None:
            found.setdefault(column, path)
            continue  # its children are `row` and the name, both accounted for
        stack.extend(reversed(list(node.iter_child_nodes())))
    return found


def column_uses(message: AnyMessage) -> dict[str, Loc]:
    """Each CSV column the message reads, with the path of the first template reading it;
    ``RowUseProblem`` (naming the template) for the first use of ``row`` that is not
    ``row.<name>`` or ``row["<name>"]``."""
    uses: dict[str, Loc] = {}
    for path, source in message_sources(message):
        for column, where in _template_columns(source, path).items():
            uses.setdefault(column, where)
    return uses


def columns_used(message: AnyMessage) -> set[str]:
    """The CSV columns the message's templates read; raises ``RowUseProblem`` when a
    template uses ``row`` in a way that hides which (``row[variable]``, ``row|length``...)."""
    return set(column_uses(message))


# --- bytes to physical lines -----------------------------------------------------------


class _Stop(Exception):
    """The file cannot be read further: a problem at ``line``, and nothing after it."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _split(text: str, final: bool) -> tuple[list[str], str]:
    """Complete lines (with their endings) and the unfinished rest.

    A trailing CR is held back until more text comes: it may be the start of a CRLF.
    """
    parts = _BREAK.split(text)
    rest = parts.pop()
    lines = [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]
    if not final and not rest and lines and lines[-1].endswith("\r"):
        rest = lines.pop()
    return lines, rest


class _Lines:
    """The physical lines of a UTF-8 byte stream (a leading BOM dropped), for csv.reader."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._pending: list[str] = []  # pieces of the unfinished line, joined when it ends
        self._pending_chars = 0
        self.count = 0  # lines handed out

    def _take(self, text: str, final: bool) -> Iterator[str]:
        if not final and not _HAS_BREAK.search(text):
            self._hold(text)  # no line ends here: no join, so long lines stay linear
            return
        lines, rest = _split("".join(self._pending) + text, final)
        self._pending, self._pending_chars = [], 0
        for line in lines:
            self._check_length(len(line), self.count + 1)
            self.count += 1
            yield line
        if rest and final:
            self.count += 1
            yield rest
        elif rest:
            self._hold(rest)

    def _hold(self, text: str) -> None:
        self._pending.append(text)
        self._pending_chars += len(text)
        self._check_length(self._pending_chars, self.count + 1)

    @staticmethod
    def _check_length(chars: int, line: int) -> None:
        if chars > MAX_LINE_CHARS:
            raise _Stop(line, f"line longer than {MAX_LINE_CHARS} characters: not a CSV")

    def _decode(
        self, decoder: codecs.IncrementalDecoder, data: bytes, final: bool
    ) -> Iterator[str]:
        try:
            text = decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            # exc.object is what was decoded (with bytes held from earlier chunks), so the
            # part before exc.start is valid and tells the line the bad byte is on.
            valid = bytes(exc.object[: exc.start]).decode("utf-8")
            lines, _ = _split("".join(self._pending) + valid, final=True)
            for line in lines:  # the rows before it are still checked; its own line is not
                self.count += 1
                yield line
            raise _Stop(self.count + 1, NOT_UTF8) from None
        yield from self._take(text, final)

    def __iter__(self) -> Iterator[str]:
        # utf-8-sig: UTF-8 that drops a BOM at the start, even one split across chunks.
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        for chunk in self._chunks:
            yield from self._decode(decoder, chunk, final=False)
        yield from self._decode(decoder, b"", final=True)


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    line: int  # where it starts
    fields: list[str]


def _csv_error(exc: csv.Error, line: int) -> str:
    """The reason for a record the csv module refuses; ``_Stop`` when nothing after it can
    be read as rows."""
    reason = str(exc)
    if reason == "unexpected end of data":
        return _NEVER_CLOSED  # at the end of the file: nothing follows anyway
    if reason.startswith("field larger than field limit"):
        # The csv module's own limit (131 072) is above ours, so this is a runaway quote:
        # what follows is the middle of that value, and would be read as nonsense rows.
        raise _Stop(line, f"a value over {MAX_FIELD_CHARS} characters, or {_NEVER_CLOSED}")
    return f"not valid CSV: {reason}"  # e.g. text after a closing quote: that line only


def _records(lines: _Lines, separator: str, out: CheckedCsv) -> Iterator[_Record]:
    """The non-blank records; malformed ones become problems and are skipped."""
    reader = csv.reader(lines, delimiter=separator, quotechar='"', doublequote=True, strict=True)
    end = 0  # the last line of the previous record
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            out.add_problem(end + 1, None, _csv_error(exc, end + 1))
            end = reader.line_num  # the reader goes on at the next line
            continue
        start, end = end + 1, reader.line_num
        if any(value.strip() for value in fields):
            yield _Record(start, fields)


# --- the header ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """Where the columns the check needs are (None: missing, already reported)."""

    header: list[str]
    recipient: int | None
    sender: int | None
    used: list[tuple[str, int]]  # template columns that exist, in header order


def _header_problems(header: list[str], line: int, result: CheckedCsv) -> None:
    first: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if len(name) > MAX_FIELD_CHARS:
            result.add_problem(
                line, None, f"column {number}'s name is over {MAX_FIELD_CHARS} characters"
            )
        elif not name:
            result.add_problem(line, None, f"column {number} has no name")
        elif name in first:
            twice = f"columns {first[name]} and {number}"
            result.add_problem(line, name, f"column {name!r} appears twice ({twice})")
        else:
            first[name] = number


def _find(header: list[str], name: str, role: str, line: int, result: CheckedCsv) -> int | None:
    if name in header:
        return header.index(name)
    shown = ", ".join(repr(h) for h in header[:20]) + (", ..." if len(header) > 20 else "")
    result.add_problem(line, name, f"no column {name!r} ({role}); the header has {shown}")
    return None


def _used_columns(spec: CampaignCreate, line: int, result: CheckedCsv) -> dict[str, Loc]:
    try:
        return column_uses(spec.message)
    except RowUseProblem as exc:
        result.add_problem(line, None, str(exc))  # the rows are still checked, but for this
        return {}


def _columns(record: _Record, spec: CampaignCreate, result: CheckedCsv) -> _Columns:
    header = result.header
    line = record.line
    _header_problems(header, line, result)
    recipient = _find(header, spec.recipient_column, "the recipient column", line, result)
    sender = None
    if spec.sender_column is not None:
        sender = _find(header, spec.sender_column, "the sender column", line, result)
    used: list[tuple[str, int]] = []
    # The recipient's and sender's own checks say more than "empty parameter" would.
    skip = {spec.recipient_column, spec.sender_column}
    for name, path in _used_columns(spec, line, result).items():
        where = ".".join(str(part) for part in path)
        if name in skip:
            continue
        if _find(header, name, f"the message uses it in {where}", line, result) is not None:
            used.append((name, header.index(name)))
    used.sort(key=lambda use: use[1])
    return _Columns(header, recipient, sender, used)


# --- rows ------------------------------------------------------------------------------


@dataclass
class _RowChecker:
    spec: CampaignCreate
    senders: Collection[str]
    columns: _Columns
    result: CheckedCsv
    first_line: dict[str, int] = field(default_factory=dict)  # recipient -> its first row

    def check(self, record: _Record) -> None:
        before = self.result.total_problems
        line, fields = record.line, record.fields
        header = self.columns.header
        if len(fields) != len(header):
            self.result.add_problem(
                line, None, _wrong_count(len(fields), len(header), self.spec.separator)
            )
            return  # the values are misaligned: checking them would only mislead
        self._field_lengths(line, fields)
        recipient = self._recipient(line, fields)
        sender = self._sender(line, fields)
        self._parameters(line, fields)
        if self.result.total_problems == before and recipient is not None:
            self._keep(line, recipient, sender, fields)

    def _field_lengths(self, line: int, fields: list[str]) -> None:
        for name, value in zip(self.columns.header, fields, strict=True):
            if len(value) > MAX_FIELD_CHARS:
                self.result.add_problem(line, name, f"value over {MAX_FIELD_CHARS} characters")

    def _recipient(self, line: int, fields: list[str]) -> str | None:
        if self.columns.recipient is None:
            return None
        column = self.spec.recipient_column
        value = fields[self.columns.recipient].strip()
        if not value:
            self.result.add_problem(line, column, "no recipient")
            return None
        if self.spec.recipient_kind == "external_id":
            return value
        try:
            return e164(value)
        except ValueError as exc:
            self.result.add_problem(line, column, str(exc))
            return None

    def _sender(self, line: int, fields: list[str]) -> str | None:
        if self.columns.sender is None or self.spec.sender_column is None:
            return None
        value = fields[self.columns.sender].strip()
        if not value:
            self.result.add_problem(line, self.spec.sender_column, "no sender")
        elif value not in self.senders:
            self.result.add_problem(
                line, self.spec.sender_column, _unknown_sender(value, self.senders)
            )
        return value

    def _parameters(self, line: int, fields: list[str]) -> None:
        for name, index in self.columns.used:
            if not fields[index].strip():
                self.result.add_problem(line, name, EMPTY_PARAMETER)

    def _keep(self, line: int, recipient: str, sender: str | None, fields: list[str]) -> None:
        first = self.first_line.setdefault(recipient, line)
        if first != line:
            self.result.duplicates.append((line, first))
            return
        values = dict(zip(self.columns.header, fields, strict=True))
        self.result.rows.append(CheckedRow(line, recipient, sender, values))


def _wrong_count(values: int, columns: int, separator: str) -> str:
    plural = "value" if values == 1 else "values"
    return (
        f"{values} {plural}, the header has {columns} columns (a value holding the"
        f" separator {separator!r} must be in double quotes)"
    )


def _unknown_sender(value: str, senders: Collection[str]) -> str:
    known = sorted(senders)
    shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    return f"unknown sender {value!r}; the senders are {shown or 'none'}"


# --- the check -------------------------------------------------------------------------


def _header(record: _Record, result: CheckedCsv) -> bool:
    """Take the header from the first record; False when the file cannot be checked on."""
    if len(record.fields) > MAX_COLUMNS:
        result.add_problem(
            record.line, None, f"{len(record.fields)} columns: at most {MAX_COLUMNS}"
        )
        return False
    result.header = [name.strip() for name in record.fields]
    return True


def _check_records(
    records: Iterator[_Record], spec: CampaignCreate, senders: Collection[str], out: CheckedCsv
) -> None:
    first = next(records, None)
    if first is None:
        out.add_problem(1, None, "the file is empty: its first line must name the columns")
        return
    if not _header(first, out):
        return
    checker = _RowChecker(spec, senders, _columns(first, spec, out), out)
    for record in records:
        checker.check(record)


def check_csv(
    chunks: Iterable[bytes], spec: CampaignCreate, senders: Collection[str]
) -> CheckedCsv:
    """Check a campaign's CSV completely: header, then every row (see the module's notes).

    ``senders`` are the channel slugs a ``sender_column`` may name. Rows with problems are
    left out of ``rows``; a recipient seen before is kept once and listed in ``duplicates``.
    """
    if spec.separator not in SEPARATORS:  # the model allows no other; a constructed one might
        raise ValueError(f"separator must be one of {' '.join(SEPARATORS)}")
    out = CheckedCsv(header=[])
    records = _records(_Lines(chunks), spec.separator, out)
    try:
        _check_records(records, spec, senders, out)
    except _Stop as stop:
        out.add_problem(stop.line, None, stop.reason)
    return out
