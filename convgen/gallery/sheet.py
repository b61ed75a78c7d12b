"""Contact sheets of identify results: each query beside its answer's first enrolled sample, or "unknown".

``sheet.png`` (for a report or a README) and ``sheet.html`` (one self-contained page)
show the same rows. Pictures come from the gallery's input pipeline (``preview``): the
face crop the encoder saw, a spectrogram, a CT slice; a 1D preview (an ECG trace) is
drawn as a line. A file that cannot be previewed gets a grey box: the answer is in the
table either way.
"""

from __future__ import annotations

import base64
import html
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

HEIGHT = 128  # pixels per picture
TRACE_WIDTH = 480
MAX_ROWS = 200  # a sheet is for looking at: past this, results.json holds the rest (each row re-reads two files)


def picture(preview, file):
    """``file`` as an RGB PIL image ``HEIGHT`` pixels high, or None."""
    from PIL import Image, ImageDraw

    try:
        image = preview(file) if file and Path(file).exists() else None
    except Exception:  # noqa: BLE001  (a sheet shows what it can)
        image = None
    if image is None:
        return None
    image = torch.as_tensor(image).float()
    if image.ndim == 2:  # (C, L): a trace, drawn as a line
        y = image[0].numpy()
        y = (y - y.min()) / (np.ptp(y) + 1e-9)
        canvas = Image.new("RGB", (TRACE_WIDTH, HEIGHT), "white")
        xs = np.linspace(2, TRACE_WIDTH - 3, len(y))
        ImageDraw.Draw(canvas).line([(float(x), float(HEIGHT - 6 - (HEIGHT - 12) * v)) for x, v in zip(xs, y)], fill="black", width=1)
        return canvas
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        return None
    image = image.clamp(0, 1)
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).convert("RGB")
    width = max(1, round(out.width * HEIGHT / out.height))
    return out.resize((width, HEIGHT), Image.LANCZOS)


def _blank(text: str):
    from PIL import Image, ImageDraw

    box = Image.new("RGB", (HEIGHT, HEIGHT), (230, 230, 230))
    ImageDraw.Draw(box).text((10, HEIGHT // 2 - 6), text, fill=(90, 90, 90))
    return box


def write(out_dir: Path, title: str, rows: list[dict], preview, max_rows: int = MAX_ROWS) -> tuple[Path, Path]:
    """Write ``sheet.png`` and ``sheet.html``; ``rows`` hold ``file``, ``name`` (None: unknown), ``match_file``, ``distance``, ``threshold``.

    Only the first ``max_rows`` rows are drawn (the title says how many more there are).
    """
    from PIL import Image, ImageDraw

    from convgen.io import atomic_path, atomic_write_text

    if len(rows) > max_rows:
        title = f"{title}: the first {max_rows} of {len(rows)} files (all in results.json)"
        rows = rows[:max_rows]
    cells = []
    for row in rows:
        query = picture(preview, row["file"]) or _blank("no preview")
        if row["name"] is None:
            match = _blank("unknown")
        else:
            match = picture(preview, row.get("match_file")) or _blank("no preview")
        lines = [f"{Path(row['file']).parent.name}/{Path(row['file']).name}", f"-> {row['name'] or 'unknown'}", f"distance {row['distance']:.4f}", f"threshold {row['threshold']:.4f}"]
        cells.append((query, match, lines))

    # PNG: one row per query, columns aligned.
    gap, text_width = 12, 260
    left = max((q.width for q, _, _ in cells), default=HEIGHT)
    middle = max((m.width for _, m, _ in cells), default=HEIGHT)
    width = gap + left + gap + middle + gap + text_width
    height = 34 + len(cells) * (HEIGHT + gap)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 10), f"{title}   (query | answer's first enrolled sample)", fill="black")
    for i, (query, match, lines) in enumerate(cells):
        top = 34 + i * (HEIGHT + gap)
        sheet.paste(query, (gap, top))
        sheet.paste(match, (gap + left + gap, top))
        for k, line in enumerate(lines):
            colour = (170, 0, 0) if k == 1 and "unknown" in line else "black"
            draw.text((gap + left + gap + middle + gap, top + 8 + 18 * k), line, fill=colour)
    png = out_dir / "sheet.png"
    with atomic_path(png) as tmp:
        sheet.save(tmp, format="PNG")

    def inline(image) -> str:
        buffer = BytesIO()
        image.save(buffer, format="PNG")
        return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'

    body = "".join(
        f"<tr><td>{inline(q)}<br>{html.escape(lines[0])}</td><td>{inline(m)}<br><b>{html.escape(lines[1][3:])}</b></td>"
        f"<td>{html.escape(lines[2])}<br>{html.escape(lines[3])}</td></tr>"
        for q, m, lines in cells
    )
    page = ("<!doctype html><meta charset='utf-8'><title>convgen identify</title><style>body{font-family:sans-serif}"
            f"td{{padding:6px;vertical-align:top;text-align:center}}</style><h1>{html.escape(title)}</h1><table><tr><th>query</th>"
            f"<th>answer (first enrolled sample)</th><th>distance</th></tr>{body}</table>\n")  # fmt: skip
    page_path = out_dir / "sheet.html"
    atomic_write_text(page_path, page)
    return png, page_path
