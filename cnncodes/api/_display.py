"""How results show in a notebook cell: a short repr, and an HTML table for the tabular ones
(Jupyter calls ``_repr_html_``), so a result prints in a few lines, not as every field it holds."""
import html


def html_table(header, rows, caption=None, note=None) -> str:
    """A small HTML table; every cell escaped."""
    head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    title = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    under = f"<p style='font-size:smaller'>{html.escape(note)}</p>" if note else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{under}"

