"""``report.html``: one self-contained page per comparison — table, figures, grids, command, config, runs.

The page needs nothing but itself: images are embedded as data URIs, the style and the few lines of script
that sort the tables are inline, nothing is fetched from a network. It opens offline in any browser, can be
mailed or attached to a lab notebook, and links to the PDFs next to it when the folder travels with it.
``report.html#sort=-test/recon_loss`` opens it sorted by a column (``-``: descending).
"""

from __future__ import annotations

import base64
import html
import json
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from aelab.analysis.style import order_key, ordered, value_text
from aelab.analysis.table import FormattedTable, RunTable, split_text
from aelab.convergence import RULE_TEXT

#: hydra overrides of a sweep that say how it was launched (kept in the study's command)
LAUNCH_OVERRIDES = ("hydra/launcher=", "hydra.launcher.", "hydra/sweeper=", "hydra.sweeper.")

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1.2em;
color:#1d1d1f;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1em}.meta{color:#555}nav a{margin-right:1em}code,pre{font:13px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f6f6f6;padding:.7em;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}th,td{border-bottom:1px solid #e3e3e3;padding:.3em .7em;
text-align:right;white-space:nowrap}th{cursor:pointer;user-select:none;background:#fafafa;position:sticky;top:0}
th.text,td.text{text-align:left}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}tbody tr:hover{background:#f3f7ff}.scroll{overflow-x:auto}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:13px}
.status-completed{color:#1a7f37}.status-failed,.status-unreadable{color:#b42318}.status-running,.status-interrupted,
.status-pruned,.status-not{color:#9a6700}.error{white-space:normal;text-align:left;max-width:40em}
"""

SCRIPT = """
(function () {
  function value(cell, numeric) {
    var v = cell.getAttribute("data-v");
    if (v === null) v = cell.textContent;
    if (!numeric) return v.toLowerCase();
    var f = parseFloat(v);
    return isNaN(f) ? Infinity : f;
  }
  function sortBy(table, col, dir) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var heads = table.tHead.rows[0].cells, numeric = heads[col].getAttribute("data-type") === "num";
    rows.sort(function (a, b) {
      var x = value(a.cells[col], numeric), y = value(b.cells[col], numeric);
      if (x === y) return 0;
      if (numeric && x === Infinity) return 1;
      if (numeric && y === Infinity) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
    heads[col].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        sortBy(table, col, th.getAttribute("aria-sort") === "ascending" ? -1 : 1);
      });
    });
  });
  var asked = /sort=(-?)([^&]+)/.exec(window.location.hash);
  var results = document.getElementById("results-table");
  if (asked && results) {
    Array.prototype.forEach.call(results.tHead.rows[0].cells, function (th, col) {
      if (th.getAttribute("data-key") === decodeURIComponent(asked[2])) sortBy(results, col, asked[1] ? -1 : 1);
    });
  }
  document.body.setAttribute("data-ready", "1");
})();
"""
#: records any script error on the page itself (a headless browser's DOM dump shows it)
ERROR_HOOK = (
    'window.addEventListener("error",function(e){document.documentElement.setAttribute("data-errors",'
    '(document.documentElement.getAttribute("data-errors")||"")+e.message+";")});'
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(path: Path) -> str:
    """The file at ``path`` as a ``data:`` URI (PNG, JPEG or SVG by its suffix)."""
    kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
    mime = kind.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _plain_yaml(path: Path) -> dict:
    """A YAML file as written (interpolations such as ``${paths.run_dir}`` kept as text); {} when absent or bad."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def study_commands(paths: list[Path]) -> list[str]:
    """How the compared runs were made: each sweep's ``aelab-train -m`` line (and the ablation script that ran it),
    or each single run's ``aelab-train`` line, as read from the folders."""
    out: list[str] = []
    for path in paths:
        path = Path(path)
        ablation = path / "ablation.json"
        if ablation.is_file():
            try:
                out.append(json.loads(ablation.read_text())["command"])
            except (ValueError, KeyError):
                pass
        sweep = path / "aelab_sweep.yaml"
        if sweep.is_file():
            overrides = [str(o) for o in _plain_yaml(sweep).get("overrides") or []]
            launch = ((_plain_yaml(path / "multirun.yaml").get("hydra") or {}).get("overrides") or {}).get("hydra")
            overrides += [str(o) for o in launch or [] if str(o).startswith(LAUNCH_OVERRIDES)]
            out.append("aelab-train -m " + shlex.join(overrides))
            continue
        record = path / "metrics.json"
        if record.is_file():
            try:
                overrides = json.loads(record.read_text()).get("overrides")
            except ValueError:
                overrides = None
            if overrides is not None:
                out.append("aelab-train " + shlex.join(str(o) for o in overrides))
    return out


def _config_text(table: RunTable) -> tuple[str, str]:
    """The config of the first completed run (the others differ in the varying keys), and whose it is."""
    done = table.completed if not table.completed.empty else table.frame
    keys = [k for k in [*table.setting_keys, "seed"] if k in done.columns]
    order = sorted(range(len(done)), key=lambda i: tuple(order_key(done.iloc[i][k]) for k in keys))
    for run in done["run"].iloc[order]:
        path = Path(run) / ".hydra" / "config.yaml"
        if path.is_file():
            return path.read_text(), run
    return "", ""


def _table_html(formatted: FormattedTable, table: RunTable, table_id: str) -> str:
    keys = table.setting_keys
    heads = []
    for i, name in enumerate(formatted.header):
        values = [row[i] for row in formatted.raw]
        numeric = all(isinstance(v, (int, float)) or v is None for v in values) or (
            i < len(keys) and all(_is_number(v) for v in values)
        )
        shown = formatted.labels[i] if formatted.labels else name
        title = name if name in formatted.metrics else ("runs per setting" if name == "n" else name)
        heads.append(
            f'<th data-key="{_e(name)}" data-type="{"num" if numeric else "text"}" '
            f'class="{"num" if numeric else "text"}" title="{_e(title)}">{_e(shown)}</th>'
        )
    rows = []
    for cells, raw in zip(formatted.rows, formatted.raw):
        tds = []
        for i, (cell, value) in enumerate(zip(cells, raw)):
            sort = "" if value is None or (isinstance(value, float) and value != value) else f' data-v="{_e(value)}"'
            cls = "text" if i < len(keys) and not _is_number(value) else "num"
            tds.append(f'<td class="{cls}"{sort}>{_e(cell)}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="scroll"><table class="sortable" id="{table_id}"><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _runs_html(table: RunTable, metric: str | None) -> str:
    frame = table.frame
    keys = [k for k in table.setting_keys if k in frame.columns]
    end = ["at the end"] if "at_end" in frame.columns and frame["at_end"].notna().any() else []
    columns = (
        ["run", *keys, *end, "seed", "status"] + ([metric] if metric and metric in frame.columns else []) + ["error"]
    )
    heads = "".join(
        f'<th data-type="{"num" if c in (metric, "seed") else "text"}" class="{"num" if c == metric else "text"}">'
        f"{_e(c)}</th>"
        for c in columns
    )
    ordering = sorted(
        range(len(frame)),
        key=lambda i: tuple(order_key(frame.iloc[i][k]) for k in [*keys, "seed"] if k in frame.columns),
    )
    rows = []
    for i in ordering:
        row = frame.iloc[i]
        cells = [f'<td class="text" title="{_e(row["run"])}">{_e(Path(str(row["run"])).name)}</td>']
        cells += [f'<td class="text">{_e(value_text(row[k]))}</td>' for k in keys]
        if end:
            cells.append(f'<td class="text">{_e(_end_cell(row))}</td>')
        seed = row.get("seed")
        cells.append(f'<td data-v="{_e(seed)}">{_e("" if pd.isna(seed) else value_text(seed))}</td>')
        status = str(row["status"])
        cells.append(f'<td class="text status-{_e(status.split()[0].split("/")[0])}">{_e(status)}</td>')
        if metric and metric in frame.columns:
            value = pd.to_numeric(pd.Series([row.get(metric)]), errors="coerce").iloc[0]
            cells.append(f'<td data-v="{_e(value)}">{"" if pd.isna(value) else f"{value:.6g}"}</td>')
        error = row.get("error")
        cells.append(f'<td class="error">{_e("" if error is None or pd.isna(error) else error)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    for problem in table.problems:  # jobs that never started have no row in the frame
        if problem.get("status") == "not started":
            empty = '<td class="text"></td>' * (len(columns) - 4 - (1 if metric in frame.columns else 0))
            rows.append(
                f'<tr><td class="text">{_e(Path(problem["run"]).name)}</td>{empty}<td></td>'
                f'<td class="text status-not">not started</td>{"<td></td>" if metric in frame.columns else ""}'
                f'<td class="error">{_e(problem.get("error") or "")}</td></tr>'
            )
    return f'<div class="scroll"><table class="sortable" id="runs-table"><thead><tr>{heads}</tr></thead><tbody>' + (
        "".join(rows) + "</tbody></table></div>"
    )


def _end_cell(row) -> str:
    """One run's verdict at its end: ``still improving (+2.1 % per epoch)``, ``plateau``; stopped early says so."""
    verdict = row.get("at_end")
    if verdict is None or (isinstance(verdict, float) and verdict != verdict):
        return ""
    rate = row.get("improvement_pct_per_epoch")
    text = str(verdict) + (f" ({rate:+.1f} % per epoch)" if isinstance(rate, float) and rate == rate else "")
    stopped = row.get("stopped_early_epoch")
    if isinstance(stopped, (int, float)) and stopped == stopped:
        text += f"; stopped early at epoch {int(stopped)}"
    return text


def _figure_html(key: str, path: Path, caption: str) -> str:
    pdf = path.with_suffix(".pdf")
    links = f'<a href="{_e(path.name)}">{_e(path.name)}</a>' + (
        f' · <a href="{_e(pdf.name)}">{_e(pdf.name)}</a>' if pdf.is_file() else ""
    )
    return (
        f'<figure id="fig-{_e(key)}"><img src="{data_uri(path)}" alt="{_e(caption)}"{_display_width(path)}>'
        f"<figcaption>{_e(caption)} — {links}</figcaption></figure>"
    )


def _display_width(path: Path) -> str:
    """A figure shown at its size in inches (about 1.1 × a CSS inch), not at its 200-dpi pixel size."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            width, dpi = image.width, float((image.info.get("dpi") or (200, 200))[0]) or 200.0
    except OSError:
        return ""
    return f' style="width:{round(width / dpi * 106)}px"'


FIGURE_CAPTIONS = {
    "overview": "Every metric of the study against the swept key",
    "curves": "Learning curves (validation solid, training dashed)",
    "denoise_psnr": "Denoising: PSNR at each test corruption, with the noisy input as the baseline",
}


def write_html_report(
    table: RunTable,
    formatted: FormattedTable | None,
    files: dict[str, Path],
    sources: list[str],
    notes: list[str],
    out: Path,
    command: str,
    study: list[str],
    findings: list[str] | None = None,
) -> Path:
    """Write ``out/report.html`` (see the module docstring) and return its path."""
    frame = table.frame
    counts = frame["status"].value_counts().to_dict()
    for problem in table.problems:
        if problem.get("status") == "not started":
            counts["not started"] = counts.get("not started", 0) + 1
    title = f"Comparison of {', '.join(sources)}"
    meta = [
        f"Generated {datetime.now().astimezone().isoformat(timespec='seconds')} by <code>aelab-compare</code>.",
        "Runs: " + ", ".join(f"{n} {_e(s)}" for s, n in sorted(counts.items())) + ".",
    ]
    if table.setting_keys:
        meta.append(
            "Varying: "
            + "; ".join(
                f"<code>{_e(k)}</code> ∈ {{{_e(', '.join(value_text(v) for v in ordered(frame[k].dropna())))}}}"
                for k in table.setting_keys
            )
            + "."
        )
        meta += [f"<code>{_e(k)}</code> follows <code>{_e(v)}</code>." for k, v in table.echoes.items()]
    seeds = ordered(frame["seed"].dropna()) if "seed" in frame else []
    if len(seeds) > 1:
        meta.append(f"Seeds {_e(', '.join(value_text(s) for s in seeds))}.")
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{" ".join(meta)}</p>']
    body.append(
        '<nav><a href="#results">Results</a><a href="#figures">Figures</a><a href="#grids">Reconstructions</a>'
        '<a href="#runs">Runs</a><a href="#study">Command and config</a></nav>'
    )
    body.append('<h2 id="results">Results</h2>')
    if formatted is None or not formatted.rows:
        body.append("<p>No completed runs.</p>")
    else:
        body.append(
            "<p>One row per setting: mean ± sample standard deviation over its runs (seeds), rounded where the "
            "spread makes further digits noise; n: runs per setting. Click a column to sort; "
            "<code>comparison.csv</code> keeps every digit.</p>"
        )
        body.append(_table_html(formatted, table, "results-table"))
        split = split_text(table)
        if split:
            body.append(f'<p class="meta"><i>± over seeds</i>: {_e(split)}.</p>')
        if "at the end" in formatted.header:
            body.append(f'<p class="meta"><i>at the end</i>: {_e(RULE_TEXT)}.</p>')
    if findings:
        body.append(
            '<h3 id="findings">Findings</h3><p class="meta">Computed from the table (docs/compare.md says how).</p>'
            "<ul>" + "".join(f"<li>{_e(f)}</li>" for f in findings) + "</ul>"
        )
    figures = [(k, v) for k, v in files.items() if v.suffix == ".png" and not k.startswith("recon_grid")]
    main = [(k, v) for k, v in figures if k in FIGURE_CAPTIONS]
    single = [(k, v) for k, v in figures if k not in FIGURE_CAPTIONS]
    body.append('<h2 id="figures">Figures</h2>')
    if not figures:
        body.append("<p>No figures (no completed runs with numbers to plot).</p>")
    for key, path in main:
        body.append(_figure_html(key, path, FIGURE_CAPTIONS[key]))
    if single:
        body.append(f"<details><summary>Each metric on its own ({len(single)} figures)</summary>")
        body += [_figure_html(k, v, table.info.label(k)) for k, v in single]
        body.append("</details>")
    grids = [(k, v) for k, v in files.items() if k.startswith("recon_grid") and v.suffix == ".png"]
    body.append('<h2 id="grids">Reconstructions</h2>')
    if grids:
        body += [_figure_html(k, v, "The same test images reconstructed by each setting") for k, v in grids]
    else:
        why = "see the notes below" if notes else "<code>--grid-images 0</code>, or runs read from a tracking service"
        body.append(f"<p>No reconstruction grid ({why}).</p>")
    panel_metric = formatted.metrics[0] if formatted is not None and formatted.metrics else None
    body.append('<h2 id="runs">Runs</h2>')
    body.append(_runs_html(table, panel_metric))
    body.append('<h2 id="study">Command and config</h2>')
    if study:
        body.append("<h3>The study</h3>" + "".join(f"<pre>{_e(c)}</pre>" for c in study))
    body.append(f"<h3>This comparison</h3><pre>{_e(command)}</pre>")
    config, whose = _config_text(table)
    if config:
        body.append(
            f"<h3>Config</h3><details><summary>The composed config of <code>{_e(Path(whose).name)}</code> "
            "(the other runs differ in the varying keys)</summary>"
            f"<pre>{_e(config)}</pre></details>"
        )
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><script>{ERROR_HOOK}</script><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
    from aelab.store.files import write_text_atomic

    path = out / "report.html"
    write_text_atomic(path, page)
    return path
