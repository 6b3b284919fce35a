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


class AuditFindings(dict):
    """What audit found (a dict: the JSON `cnncodes audit --json` prints), shown as its counts."""

    def __repr__(self) -> str:
        counts = self.get("counts", {})
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
        return f"AuditFindings({self.get('cache')}: {self.get('photos', 0):,} photos, layer {self.get('layer')}: {said})"

    def _repr_html_(self) -> str:
        counts = self.get("counts", {})
        effect = self.get("effect_on_score") or {}
        rows = [[k.replace("_", " "), v] for k, v in counts.items()]
        if "skipped" not in effect and effect:
            rows += [[f"effect on score: {k.replace('_', ' ')}", v] for k, v in effect.items()
                     if isinstance(v, (int, float, str))]
        return html_table(["finding", "count"], rows,
                          caption=f"audit of {self.get('cache')}: {self.get('photos', 0):,} photos, layer "
                                  f"{self.get('layer')}, threshold {self.get('threshold')}",
                          note="the lists: found['exact_duplicates'], ['near_duplicates'], ['leaked'], "
                               "['label_issues'], ['outliers']; found['exclude'] for fit's exclude=")
