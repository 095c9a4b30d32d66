"""Grid preview of the bundled rendered sample (docs/images/sample_preview.png).

One row per track (first frame of each), one column per view, at the stored size; any kart boxes in
``detections`` are drawn (inclusive pixel boxes, rescaled from 600x400; the followed kart in yellow). Usage: python scripts/render_sample_preview.py [SAMPLE_DIR] [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

import stk_vqa
from stk_vqa.fileio import atomic_write_bytes


def main(sample_dir: str | None = None, out: str = "docs/images/sample_preview.png", scale: int = 1) -> Path:
    import io

    scale = int(scale)
    sample = Path(sample_dir or Path(stk_vqa.__file__).parent / "data" / "sample")
    firsts = {}
    for info_path in sorted(sample.glob("*/*_info.json")):
        info = json.loads(info_path.read_text())
        firsts.setdefault(info["track"], (info_path, info))
    rows = list(firsts.values())
    width, height = rows[0][1]["image_size"]
    views = max(len(info["detections"]) for _, info in rows)
    label_h = 14
    canvas = Image.new("RGB", (views * width * scale, len(rows) * (height * scale + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (info_path, info) in enumerate(rows):
        top = r * (height * scale + label_h)
        draw.text(
            (4, top + 1), f"{info['track']}  frame {info_path.name[:5]}  box_method={info['box_method']}", fill="black"
        )
        for v, detections in enumerate(info["detections"]):
            image = Image.open(info_path.parent / f"{info_path.name[:5]}_{v:02d}_im.jpg").convert("RGB")
            image = image.resize((width * scale, height * scale), Image.NEAREST)
            box_draw = ImageDraw.Draw(image)
            own = info.get("view_kart", [None] * len(info["detections"]))[v]
            for class_id, kart, x1, y1, x2, y2 in detections:
                if class_id == 1:
                    sx, sy = width * scale / 600, height * scale / 400
                    bx, by = x1 * sx, y1 * sy
                    box_draw.rectangle(
                        [bx, by, max(bx, (x2 + 1) * sx - 1), max(by, (y2 + 1) * sy - 1)],
                        outline=(255, 255, 0) if kart == own else (255, 0, 0),
                    )
            canvas.paste(image, (v * width * scale, top + label_h))
    buffer = io.BytesIO()
    canvas.quantize(colors=256).save(buffer, format="PNG", optimize=True)  # photos: keep the PNG small
    return atomic_write_bytes(out, buffer.getvalue())


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
