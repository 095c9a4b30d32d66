"""The render data overlay: Debian's game data plus label-aware shaders, generated here from the installed data.

pysupertuxkart 1.1.2 feeds every drawn instance a per-instance vertex attribute ``layout(location = 13) in uint``
holding ``object_type << 24 | id`` and reads the integer colour attachment 3 back as ``render_data[i].instance``.
Debian's stock STK 1.4 shaders know nothing of it, so this module

* patches the first-pass shaders of every opaque SP shader (``sps_*.xml`` with ``transparent="N"``): the vertex
  shaders (plain and skinned) pass the attribute on as ``flat out uint label``; the fragment shaders write it to
  ``layout(location = 3) out uint o_label`` as the first statement of ``main`` (an early ``discard`` in an
  alpha-tested shader still drops the whole fragment, so labels follow the visible surface);
* writes the four shaders the engine asks for that Debian's data lacks (``track.vert``, ``track.geom``,
  ``track_stencil.frag``, ``track_seg.frag``): a stencil pass marks pixels whose visible surface lies inside a slab
  around the drive-line quads, and a full-screen pass copies the label map, relabelling background pixels in the
  slab as track (``2 << 24``), as the course's data did;
* builds the data folder the engine reads (``<cache>/data/``): symlinks into Debian's data, a ``shaders/`` folder of
  symlinks with the generated files in place of the stock ones, and the ``supertuxkart.git`` marker.

Run ``python -m stk_vqa.render.shaders`` (part of ``make render-deps``) to (re)build it; the render path builds it on
first use too. Nothing here is copied from another repository: the patch is applied to whatever the installed data
holds and fails loudly (naming the file) when a shader does not have the expected shape.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from pathlib import Path
from xml.etree import ElementTree

DEBIAN_DATA_DIR = Path("/usr/share/games/supertuxkart/data")
LABEL_LOCATION = 13  # the engine's per-instance label attribute
LABEL_OUTPUT = 3  # the colour attachment the engine reads as the instance map
MARKER = "supertuxkart.git"  # the file the engine's FileManager looks for in data/
GENERATOR_VERSION = "1"  # bump when the generated shaders change: a new overlay folder is built

_MAIN = re.compile(r"\bvoid\s+main\s*\(\s*(void)?\s*\)\s*\{")

# --- the four shaders the engine needs and Debian's data lacks (written for this project) ----------------------
TRACK_VERT = """\
// stk-vqa: drive-line quad corners (world space) for the track-label stencil pass
layout(location = 0) in vec3 Position;

void main()
{
    gl_Position = vec4(Position, 1.0);
}
"""

TRACK_GEOM = """\
// stk-vqa: extrude each drive-line triangle into a closed prism from `depth` metres above its plane to
// BELOW metres under it (the drive-line floats about 1 m over the road surface; measured on lighthouse: quad
// corners at y = -14.9..-15.3, kart centre at -15.9, its wheels lower). With front faces decrementing and back
// faces incrementing the stencil where the prism lies behind the visible surface, the stencil is non-zero exactly
// where that surface is inside a prism.
layout(triangles) in;
layout(triangle_strip, max_vertices = 18) out;

uniform float depth;
const float BELOW = 3.0;

void emitCorner(vec3 p)
{
    gl_Position = u_projection_view_matrix * vec4(p, 1.0);
    EmitVertex();
}

void main()
{
    vec3 a = gl_in[0].gl_Position.xyz;
    vec3 b = gl_in[1].gl_Position.xyz;
    vec3 c = gl_in[2].gl_Position.xyz;
    vec3 n = cross(b - a, c - a);
    float len = length(n);
    if (len < 1e-6)
        return;  // degenerate triangle: no volume
    n = n / len;
    if (n.y < 0.0)
        n = -n;  // point up whatever the corner order
    vec3 up = n * depth;
    vec3 down = n * BELOW;
    // the two caps, wound opposite ways so that the faces of the prism all face the same way (in or out)
    emitCorner(a + up); emitCorner(b + up); emitCorner(c + up); EndPrimitive();
    emitCorner(a - down); emitCorner(c - down); emitCorner(b - down); EndPrimitive();
    // the three sides, one strip of two triangles each
    emitCorner(a - down); emitCorner(b - down); emitCorner(a + up); emitCorner(b + up); EndPrimitive();
    emitCorner(b - down); emitCorner(c - down); emitCorner(b + up); emitCorner(c + up); EndPrimitive();
    emitCorner(c - down); emitCorner(a - down); emitCorner(c + up); emitCorner(a + up); EndPrimitive();
}
"""

TRACK_STENCIL_FRAG = """\
// stk-vqa: the prisms only touch the stencil buffer (colour writes are masked off by the engine)
void main()
{
}
"""

TRACK_SEG_FRAG = """\
// stk-vqa: copy the integer label map; where the class equals background_label, write track_label << 24 instead.
// The engine calls it with (0, 0) to copy, and with (background, track) under the drive-line stencil.
uniform usampler2D tex;
uniform uint background_label;
uniform uint track_label;

layout(location = 3) out uint o_label;

void main()
{
    // the engine's full-screen triangle has no texture coordinates: address the texel by window position
    // (the label target and the label map have the same size)
    uint label = texelFetch(tex, ivec2(gl_FragCoord.xy), 0).r;
    if ((label >> 24) == background_label)
        label = track_label << 24;
    o_label = label;
}
"""

NEW_SHADERS = {
    "track.vert": TRACK_VERT,
    "track.geom": TRACK_GEOM,
    "track_stencil.frag": TRACK_STENCIL_FRAG,
    "track_seg.frag": TRACK_SEG_FRAG,
}


class ShaderPatchError(RuntimeError):
    """A stock shader does not have the shape the patcher expects (the message names the file)."""


def opaque_first_pass_shaders(shader_dir: Path) -> tuple[list[str], list[str]]:
    """(vertex shaders, fragment shaders) of the first pass of every opaque ``sps_*.xml`` shader, sorted."""
    vertex, fragment = set(), set()
    for xml_path in sorted(Path(shader_dir).glob("sps_*.xml")):
        try:
            root = ElementTree.parse(xml_path).getroot()
        except ElementTree.ParseError as error:
            raise ShaderPatchError(f"{xml_path}: not valid XML ({error})") from None
        info, first = root.find("shader-info"), root.find("first-pass")
        if info is None or first is None:
            raise ShaderPatchError(f"{xml_path}: no <shader-info> or <first-pass> element")
        if info.get("transparent", "N") != "N":
            continue
        for key in ("vertex-shader", "skinned-mesh-shader"):
            if first.get(key):
                vertex.add(first.get(key))
        if not first.get("fragment-shader"):
            raise ShaderPatchError(f"{xml_path}: <first-pass> has no fragment-shader")
        fragment.add(first.get("fragment-shader"))
    if not vertex or not fragment:
        raise ShaderPatchError(f"{shader_dir}: no opaque sps_*.xml shaders found")
    return sorted(vertex), sorted(fragment)


def _insert(source: str, name: str, declarations: str, first_statement: str) -> str:
    """Put ``declarations`` before ``void main`` and ``first_statement`` as the first statement of ``main``."""
    matches = list(_MAIN.finditer(source))
    if len(matches) != 1:
        raise ShaderPatchError(f"{name}: expected one `void main()`, found {len(matches)}")
    if re.search(r"\blabel\b", source):
        raise ShaderPatchError(f"{name}: already uses the name `label` (patched twice, or a new stock shader?)")
    match = matches[0]
    return (
        source[: match.start()]
        + declarations
        + "\n"
        + source[match.start() : match.end()]
        + "\n    "
        + first_statement
        + source[match.end() :]
    )


def patch_vertex_shader(source: str, name: str = "vertex shader") -> str:
    """Pass the per-instance label attribute through to the fragment shader."""
    if f"location = {LABEL_LOCATION})" in source.replace("location=", "location = "):
        raise ShaderPatchError(f"{name}: attribute location {LABEL_LOCATION} is already taken")
    declarations = (
        f"// stk-vqa: per-instance label (object_type << 24 | id)\n"
        f"layout(location = {LABEL_LOCATION}) in uint i_label;\nflat out uint label;\n"
    )
    return _insert(source, name, declarations, "label = i_label;")


def patch_fragment_shader(source: str, name: str = "fragment shader") -> str:
    """Write the label to the integer colour output the engine reads, before anything can return."""
    if re.search(rf"location\s*=\s*{LABEL_OUTPUT}\s*\)\s*out", source):
        raise ShaderPatchError(f"{name}: colour output {LABEL_OUTPUT} is already used")
    declarations = (
        f"// stk-vqa: instance label output\nflat in uint label;\nlayout(location = {LABEL_OUTPUT}) out uint o_label;\n"
    )
    return _insert(source, name, declarations, "o_label = label;")


def generated_shaders(shader_dir: Path = DEBIAN_DATA_DIR / "shaders") -> dict[str, str]:
    """File name -> source of every shader the overlay replaces or adds."""
    shader_dir = Path(shader_dir)
    vertex, fragment = opaque_first_pass_shaders(shader_dir)
    out = {}
    for names, patch in ((vertex, patch_vertex_shader), (fragment, patch_fragment_shader)):
        for name in names:
            path = shader_dir / name
            if not path.is_file():
                raise ShaderPatchError(f"{path}: named in an sps_*.xml file but missing")
            out[name] = patch(path.read_text(), str(path))
    for name, source in NEW_SHADERS.items():
        if (shader_dir / name).exists():
            raise ShaderPatchError(
                f"{shader_dir / name}: the game data now has this shader; check it before replacing it"
            )
        out[name] = source
    return out


def default_cache_dir() -> Path:
    """``$STK_VQA_CACHE`` or ``$XDG_CACHE_HOME/stk-vqa`` or ``~/.cache/stk-vqa`` (never inside the repository)."""
    if os.environ.get("STK_VQA_CACHE"):
        return Path(os.environ["STK_VQA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stk-vqa"


def build_overlay(cache_dir: Path | None = None, data_dir: Path = DEBIAN_DATA_DIR) -> Path:
    """Create (once) the engine's data folder; return the folder to give as ``pystk_data.data_dir``.

    The folder name carries a hash of the generated shaders, so new game data or a new generator gets a fresh
    folder; it is built under a temporary name and renamed into place, so a half-built folder is never used.
    """
    data_dir = Path(data_dir)
    shaders = generated_shaders(data_dir / "shaders")
    digest = hashlib.sha256(GENERATOR_VERSION.encode() + str(data_dir.resolve()).encode())
    for name in sorted(shaders):
        digest.update(name.encode() + b"\0" + shaders[name].encode() + b"\0")
    root = Path(cache_dir or default_cache_dir()) / f"engine-data-{digest.hexdigest()[:12]}"
    if (root / "data" / MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    data = tmp / "data"
    data.mkdir(parents=True)
    for entry in sorted(data_dir.iterdir()):
        if entry.name != "shaders":
            (data / entry.name).symlink_to(entry)
    shader_out = data / "shaders"
    shader_out.mkdir()
    for entry in sorted((data_dir / "shaders").iterdir()):
        if entry.name not in shaders:
            (shader_out / entry.name).symlink_to(entry)
    for name, source in shaders.items():
        (shader_out / name).write_text(source)
    (data / MARKER).write_text("stk-vqa render overlay of " + str(data_dir) + "\n")
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    data_dir = Path(args[0]) if args else DEBIAN_DATA_DIR
    if not (data_dir / "shaders").is_dir():
        print(f"error: no shaders/ in {data_dir} (install Debian's supertuxkart-data)", file=sys.stderr)
        return 1
    root = build_overlay(data_dir=data_dir)
    print(
        f"render-deps: label-aware shader overlay at {root}/data "
        f"({len(generated_shaders(data_dir / 'shaders'))} generated shaders)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
