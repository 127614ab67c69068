"""Renders a measurement report: the scripts compute the figures, the prose lives in a Markdown
template under docs/templates/ (Jinja2), so a sentence is edited where it is read, not inside an
f-string. A template that names a figure the script did not give fails (StrictUndefined): a report
never shows a blank where a number should be.

>>> n(1234.5), n(1234.56, 1), n(None), signed(0.25, 2), pct(0.956), mib(2048), verdict(True), verdict(None)
('1,234', '1,234.6', '—', '+0.25', '96%', '2.0', '✅', '❔')
"""

import os
import sys

try:
    import jinja2
except ImportError:
    sys.exit("the reports need Jinja2: pip install -r scripts/requirements-reports.txt")

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "templates")


def n(value, digits=0):
    """A figure with thousands separators; a dash when it was not measured."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def signed(value, digits=1):
    return f"{value:+,.{digits}f}"


def pct(value, digits=0):
    return f"{value:.{digits}%}"


def mib(kib):
    """KiB (as /proc gives them) in MiB, one decimal; a dash when it was not measured."""
    return f"{int(kib) / 1024:.1f}" if kib not in (None, "") else "—"


def verdict(ok):
    """A target's mark: holds, fails, or (None) the run does not decide."""
    if ok is None:
        return "❔"
    return "✅" if ok else "❌"


def environment():
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(n=n, signed=signed, pct=pct, mib=mib, verdict=verdict)
    return env


def render(template, **figures):
    """The report `template` (a file under docs/templates/) filled with `figures`."""
    return environment().get_template(template).render(**figures)


def write(path, template, **figures):
    with open(path, "w") as f:
        f.write(render(template, **figures))
