"""Draw a view's boxes for people to check labels (``stk-vqa check``, previews)."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .scene import ViewScene

KART_COLOR = (40, 220, 40)
EGO_COLOR = (255, 40, 40)
OBJECT_COLORS = {
    2: (120, 120, 255),
    3: (90, 90, 90),
    4: (255, 220, 0),
    5: (255, 0, 255),
    6: (0, 220, 255),
    8: (255, 128, 0),
}


def draw_scene(scene: ViewScene, image: Image.Image | None = None, scale: int = 4, objects: bool = True) -> Image.Image:
    """The view (or a grey canvas of its size) enlarged ``scale`` times, with kart boxes and names drawn.

    The ego kart is red and marked ``EGO``; other karts are green; countable objects thin, coloured by class.
    """
    width, height = scene.image_size
    if image is None:
        image = Image.new("RGB", (width, height), (64, 64, 64))
    canvas = image.convert("RGB").resize((width * scale, height * scale), Image.NEAREST)
    pen = ImageDraw.Draw(canvas)
    if objects:
        for obj in scene.objects:
            if obj.class_id in (2, 3):
                continue  # track / background regions would cover everything
            b = obj.box
            pen.rectangle(
                [b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale],
                outline=OBJECT_COLORS.get(obj.class_id, (255, 255, 255)),
            )
    for kart in scene.karts:
        b = kart.box
        is_ego = kart is scene.ego
        color = EGO_COLOR if is_ego else KART_COLOR
        pen.rectangle([b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale], outline=color, width=2)
        cx, cy = kart.center
        pen.ellipse([cx * scale - 3, cy * scale - 3, cx * scale + 3, cy * scale + 3], fill=color)
        label = f"EGO {kart.name}" if is_ego else kart.name
        pen.text((b.x1 * scale + 2, max(0, b.y1 * scale - 12)), label, fill=color)
    return canvas
