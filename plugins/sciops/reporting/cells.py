"""Cells a spreadsheet would run as a formula, made text: results.csv, summary.csv and failures.csv.

Image names and what macros print reach the collated tables as they are; opened in Excel or
LibreOffice, a cell beginning with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return
before one) is a formula (``=HYPERLINK(...)``, ``=cmd|' /C calc'!A0``). OWASP's rule for CSV
injection: such a cell is prefixed with a single quote, which spreadsheets show as text. A number
(``-1.5``, ``+3``, ``-2e-3``) is left as it is: it is a number to the spreadsheet too. Text that
already begins with quotes and then a trigger gets one more, so :func:`plain` gives back exactly
what was written (the parquet file keeps the values unchanged; CSV readers in SciOps use ``plain``).
Quoting of commas, quotes and line breaks is the CSV writers' (pyarrow's and the csv module's).
"""
from __future__ import annotations

import re
from typing import Any

#: What makes a cell a formula, after any number of single quotes (those are escaped too, to be reversible).
_FORMULA = r"^'*[=+\-@\t\r]"
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_formula, _number = re.compile(_FORMULA), re.compile(_NUMBER)


def neutral(value: Any) -> Any:
    """``value`` as a cell no spreadsheet runs (text only; numbers and other types unchanged)."""
    if isinstance(value, str) and _formula.match(value) and not _number.match(value):
        return "'" + value
    return value


def plain(value: Any) -> Any:
    """The value :func:`neutral` was given (a CSV cell read back)."""
    if isinstance(value, str) and value.startswith("'") and _formula.match(value[1:]):
        return value[1:]
    return value


def neutral_arrow(table):
    """A pyarrow table with every text column's cells through :func:`neutral` (vectorised)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        risky = pc.and_(pc.match_substring_regex(col, _FORMULA),
                        pc.invert(pc.match_substring_regex(col, _NUMBER)))
        if pc.any(risky).as_py():
            fixed = pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col)
            table = table.set_column(i, name, fixed)
    return table


def neutral_frame(df):
    """A pandas DataFrame with every text cell through :func:`neutral` (a copy)."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    df = df.copy()
    for name in df.columns:   # text is 'object' or (pandas 3) 'str'
        if is_object_dtype(df[name].dtype) or is_string_dtype(df[name].dtype):
            df[name] = df[name].map(neutral)
    return df
