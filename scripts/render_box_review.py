"""Review sheets for rendered boxes: every view of every frame, enlarged, with its kart boxes drawn.

Kart boxes are red with the kart id above them; the followed kart (``view_kart``) is yellow; pickups, nitro, bombs
and projectiles are thin cyan boxes. Boxes are inclusive pixel boxes in 600x400 space, drawn scaled. Usage:
    python scripts/render_box_review.py [DATA_DIR] [OUT_PREFIX] [SCALE]
writes OUT_PREFIX_0.png, OUT_PREFIX_1.png, ... (8 frames per sheet) and prints counts (views, views with a kart
box, views whose followed kart is boxed).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

import stk_vqa

ITEM_CLASSES = {4, 5, 6, 8}


def main(data_dir: str = "", out_prefix: str = "box_review", scale: int = 3) -> Counter:
    root = Path(data_dir or Path(stk_vqa.__file__).parent / "data" / "sample")
    infos = sorted(root.glob("*/*_info.json")) or sorted(root.glob("*_info.json"))
    counts: Counter = Counter()
    scale = int(scale)
    for sheet, start in enumerate(range(0, len(infos), 8)):
        page = infos[start : start + 8]
        first = json.loads(page[0].read_text())
        width, height = (s * scale for s in first["image_size"])
        views = max(len(json.loads(p.read_text())["detections"]) for p in page)
        canvas = Image.new("RGB", (width * views, height * len(page)), "white")
        for row, path in enumerate(page):
            info = json.loads(path.read_text())
            for view, detections in enumerate(info["detections"]):
                image = Image.open(path.parent / f"{path.name[:5]}_{view:02d}_im.jpg").convert("RGB")
                image = image.resize((width, height), Image.BILINEAR)
                draw = ImageDraw.Draw(image)
                sx, sy = width / 600, height / 400
                own = info.get("view_kart", [None] * len(info["detections"]))[view]
                karts = [d for d in detections if d[0] == 1]
                counts["views"] += 1
                counts["views_with_kart_box"] += bool(karts)
                counts["views_own_kart_boxed"] += any(d[1] == own for d in karts)
                for class_id, instance_id, x1, y1, x2, y2 in detections:
                    left, top = x1 * sx, y1 * sy  # inclusive box -> the edges of its first and last pixels
                    box = [left, top, max(left, (x2 + 1) * sx - 1), max(top, (y2 + 1) * sy - 1)]
                    if class_id == 1:
                        colour = (255, 255, 0) if instance_id == own else (255, 0, 0)
                        draw.rectangle(box, outline=colour, width=2)
                        draw.text((box[0], max(0, box[1] - 11)), str(instance_id), fill=colour)
                    elif class_id in ITEM_CLASSES:
                        draw.rectangle(box, outline=(0, 255, 255))
                draw.text(
                    (3, height - 12),
                    f"{path.parent.name}/{path.name[:5]} v{view} {info['track']}",
                    fill=(255, 255, 255),
                )
                canvas.paste(image, (width * view, height * row))
        canvas.save(f"{out_prefix}_{sheet}.png")
    print(dict(counts))
    return counts


if __name__ == "__main__":
    main(*sys.argv[1:])
