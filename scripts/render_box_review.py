"""Review sheets for rendered kart boxes: every view of every frame with its boxes (kart id above each box).

Views whose camera check failed are marked NO BOXES. Usage:
    python scripts/render_box_review.py [DATA_DIR] [OUT_PREFIX] [SCALE]
writes OUT_PREFIX_0.png, OUT_PREFIX_1.png, ... (8 frames per sheet) and prints the box_check counts.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

import stk_vqa


def main(data_dir: str = "", out_prefix: str = "box_review", scale: int = 2) -> Counter:
    root = Path(data_dir or Path(stk_vqa.__file__).parent / "data" / "sample")
    infos = sorted(root.glob("*/*_info.json"))
    checks: Counter = Counter()
    scale = int(scale)
    for sheet, start in enumerate(range(0, len(infos), 8)):
        page = infos[start:start + 8]
        first = json.loads(page[0].read_text())
        width, height = (s * scale for s in first["image_size"])
        views = max(len(json.loads(p.read_text())["detections"]) for p in page)
        canvas = Image.new("RGB", (width * views, height * len(page)), "white")
        for row, path in enumerate(page):
            info = json.loads(path.read_text())
            for view, detections in enumerate(info["detections"]):
                image = Image.open(path.parent / f"{path.name[:5]}_{view:02d}_im.jpg").convert("RGB")
                image = image.resize((width, height), Image.NEAREST)
                draw = ImageDraw.Draw(image)
                check = info.get("box_check", ["ok"] * len(info["detections"]))[view]
                checks["ok" if check == "ok" else check.split(":", 1)[-1].strip().split(" ")[0]] += 1
                sx, sy = width / 600, height / 400
                for _, kart, x1, y1, x2, y2 in detections:
                    draw.rectangle([x1 * sx, y1 * sy, x2 * sx - 1, y2 * sy - 1], outline=(255, 0, 0))
                    draw.text((x1 * sx, max(0, y1 * sy - 10)), str(kart), fill=(255, 255, 0))
                if check != "ok":
                    draw.text((3, 3), "NO BOXES", fill=(255, 0, 0))
                draw.text((3, height - 12), f"{path.parent.name}/{path.name[:5]} v{view} {info['track']}",
                          fill=(255, 255, 255))
                canvas.paste(image, (width * view, height * row))
        canvas.save(f"{out_prefix}_{sheet}.png")
    print(dict(checks))
    return checks


if __name__ == "__main__":
    main(*sys.argv[1:])
