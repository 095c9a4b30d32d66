"""The plain functions behind ``stk-vqa app`` (no Gradio here: :mod:`stk_vqa.app.ui` only wires them).

* data: :func:`open_data` turns ``--data`` into a :class:`FramesSource` (a folder in the course layout, e.g. the
  bundled sample) or a :class:`DatasetSource` (a DatasetDict folder or Hub id); both list splits, frames and
  views and give a :class:`ViewData` (image, scene, QA pairs); :func:`view_from_upload` makes one from an uploaded
  image and/or info.json;
* frames: :func:`annotated_image` (boxes, names, ego; dropped karts in grey), :func:`scene_facts_markdown`
  (track, kept and dropped karts and why);
* questions: :func:`view_pairs`, :func:`qa_rows`, :func:`dataset_rows`;
* ask: :class:`ModelBank` loads the base model and adapters once (lazily, on the first question) and caches them;
  :func:`ask` answers one question with every model side by side, :func:`run_family` scores the view's questions;
* report: :func:`open_report` reads an evaluation folder.

Every failure the page must show is an :class:`AppError` whose message is a sentence for the user.
"""

from .config import (
    BUNDLED_SAMPLE,
    QUICKSTART_ADAPTER,
    QUICKSTART_DIR,
    QUICKSTART_MODEL,
    QUICKSTART_REPORT,
    AppConfig,
    AppError,
    AppOptions,
    resolve_config,
)
from .models import (
    FREE_QUESTION_TOKENS,
    AskResult,
    FamilyRun,
    ModelBank,
    ask,
    ask_markdown,
    family_choices,
    family_run_markdown,
    run_family,
)
from .reports import ReportView, open_report, safe_message
from .sources import DatasetSource, FrameEntry, FramesSource, open_data
from .views import (
    DISPLAY_WIDTH,
    DROPPED_COLOR,
    EXPECTED_IMAGE_SIZES,
    KartBox,
    ViewData,
    _md,
    annotated_image,
    image_bytes,
    kart_boxes,
    qa_rows,
    question_choices,
    reference_answer,
    scene_facts_markdown,
    view_from_upload,
    view_pairs,
)
