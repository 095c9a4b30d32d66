"""``stk-vqa preview``: a PNG grid and a static HTML gallery of sample rows of a built dataset."""

from __future__ import annotations

import html
import random
from pathlib import Path

from stk_vqa.fileio import atomic_directory, guard_output_dir

from .configs import PreviewConfig

TILE_SCALE = 3
CAPTION_LINES = 3


def _render_tile(row: dict, data_dir: Path | None):
    """The row's image, enlarged, with the frame's boxes drawn when its info file is at hand."""
    from PIL import Image

    from .draw import draw_scene
    from .info_file import load_frame
    from .scene import view_scene

    image = row["images"][0].convert("RGB")
    info = data_dir / Path(row["image_file"]).parent / f"{row['frame_id']}_info.json" if data_dir else None
    if info is not None and info.exists() and row["view_index"] >= 0:
        scene = view_scene(load_frame(info), row["view_index"], image.size)
        return draw_scene(scene, image, scale=TILE_SCALE, objects=False)
    return image.resize((image.width * TILE_SCALE, image.height * TILE_SCALE), Image.NEAREST)


def _qa_lines(row: dict) -> list[str]:
    questions = row["question"] if isinstance(row["question"], list) else [row["question"]]
    answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
    return [f"Q: {q}  A: {a}" for q, a in zip(questions, answers)]


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def preview(config: PreviewConfig) -> None:
    """Write ``<out_dir>/preview.png`` (a grid) and ``<out_dir>/index.html`` (a gallery) of sample rows."""
    dataset, split, data_dir, seed = config.dataset, config.split, config.data_dir, config.seed
    import datasets
    from PIL import Image, ImageDraw

    out = Path(config.out_dir)
    inputs = [dataset if Path(dataset).exists() else None, data_dir]
    guard_output_dir(out, inputs, overwrite=True, what="out_dir")  # its own earlier preview is replaced
    try:
        ds = datasets.load_dataset(dataset, split=split)
    except (ValueError, OSError, KeyError) as err:  # no such split / folder / Hub id (offline), no data files
        raise ValueError(f"{dataset}[{split}]: cannot load it ({type(err).__name__}: {err})") from None
    except Exception as err:  # datasets raises its own types for Hub ids that do not resolve
        raise ValueError(f"{dataset}: not a local dataset folder and not loadable from the Hub ({err})") from None
    missing = [c for c in ("images", "question", "answer", "image_file", "track", "family") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{dataset}[{split}]: missing column(s) {missing}; preview reads stk-vqa build output")
    if len(ds) == 0:
        raise ValueError(f"{dataset}[{split}]: no rows")
    indices = sorted(random.Random(seed).sample(range(len(ds)), min(config.num_rows, len(ds))))
    rows = [ds[i] for i in indices]
    data_path = Path(data_dir) if data_dir else None
    tiles = []
    for index, row in zip(indices, rows):
        try:
            tiles.append(_render_tile(row, data_path))
        except (OSError, ValueError, SyntaxError, IndexError, KeyError, TypeError) as err:
            raise ValueError(
                f"{dataset}[{split}] row {index} ({row.get('image_file')}): cannot draw it: {err}"
            ) from None
    tile_w = max(t.width for t in tiles)
    tile_h = max(t.height for t in tiles)
    chars = max(20, tile_w // 6)
    captions = [[line for qa in _qa_lines(row)[:CAPTION_LINES] for line in _wrap(qa, chars)] for row in rows]
    caption_h = 12 * max(len(c) for c in captions) + 6
    cols = max(1, min(config.columns, len(tiles)))
    grid_rows = (len(tiles) + cols - 1) // cols
    grid = Image.new("RGB", (cols * (tile_w + 8), grid_rows * (tile_h + caption_h + 8)), "white")
    pen = ImageDraw.Draw(grid)
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        x, y = (k % cols) * (tile_w + 8) + 4, (k // cols) * (tile_h + caption_h + 8) + 4
        grid.paste(tile, (x, y))
        for j, line in enumerate(caption):
            pen.text((x, y + tile_h + 3 + 12 * j), line, fill=(0, 0, 0))

    with atomic_directory(out, overwrite=True, inputs=inputs, command="preview") as tmp:
        grid.save(tmp / "preview.png", format="PNG")
        (tmp / "images").mkdir()
        for k, tile in enumerate(tiles):
            tile.save(tmp / "images" / f"{k:03d}.png", format="PNG")
        (tmp / "index.html").write_text(_page(dataset, split, rows, tile_w, len(ds)), encoding="utf-8")
    print(f"wrote {out / 'preview.png'} and {out / 'index.html'}")


def _page(dataset: str, split: str, rows: list[dict], tile_w: int, total: int) -> str:
    cells = []
    for k, row in enumerate(rows):
        qa = "".join(f"<li>{html.escape(line)}</li>" for line in _qa_lines(row))
        meta = html.escape(f"{row['image_file']} · {row['track']} · {row['family']}")
        cells.append(
            f'<figure><img src="images/{k:03d}.png" alt="{meta}"><figcaption><small>{meta}</small><ul>{qa}</ul></figcaption></figure>'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>stk-vqa preview</title><style>"
        "body{font-family:sans-serif}figure{display:inline-block;vertical-align:top;width:"
        f"{tile_w}px;margin:6px}}img{{image-rendering:pixelated}}ul{{padding-left:16px}}</style></head><body>"
        f"<h1>{html.escape(str(dataset))} — {html.escape(split)} ({len(rows)} of {total} rows)</h1>"
        + "".join(cells)
        + "</body></html>\n"
    )
    return page
