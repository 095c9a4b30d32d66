"""The Gradio page of ``stk-vqa app``: it only wires the functions of :mod:`stk_vqa.app.logic`.

Gradio is imported inside the functions, so that ``stk-vqa`` starts without it and says how to install it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import logic
from .logic import AppConfig, AppError, AppOptions, ModelBank, ViewData

logger = logging.getLogger(__name__)

TITLE = "stk-vqa: SuperTuxKart scenes, questions and models"
CSS = """
.gradio-container {max-width: 1500px !important; margin: 0 auto !important}
#stk-header h1 {margin-bottom: 0.1em}
#stk-header p {margin-top: 0.2em; color: var(--body-text-color-subdued)}
.stk-status p {color: #b45309; font-weight: 600}
#answers table, #family-run table, #scene-facts table {font-size: 0.92em}
"""
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no usage reports
    try:
        import gradio as gr
    except ImportError as err:
        raise SystemExit(
            f"error: stk-vqa app needs Gradio ({err}); install the app extra: pip install -e '.[app]'"
        ) from None
    return gr


def theme():
    """Gradio's default look with system fonts: the page fetches nothing from the internet."""
    gr = _gradio()
    return gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate",
                             font=SYSTEM_FONTS, font_mono=MONO_FONTS)  # fmt: skip


def _message(err: BaseException) -> str:
    if not isinstance(err, AppError):
        logger.exception("stk-vqa app: unexpected error")
    return logic.safe_message(err)


def build_app(config: AppConfig, device: str = "auto"):
    """The ``gr.Blocks`` page for ``config`` (not launched)."""
    gr = _gradio()
    source = logic.open_data(config.data)
    bank = ModelBank(config.model, config.adapters, device=device)
    splits = source.splits()
    first_split = next((s for s in splits if s in ("valid", "validation")), splits[0])

    def frame_choices(split: str):
        return [(f.label, f.key) for f in source.frames(split)]

    def views_of(split: str, frame_key: str) -> list[int]:
        return next((f.views for f in source.frames(split) if f.key == frame_key), [0])

    def rows_table(split: str):
        rows = source.rows(split)
        return rows if rows is not None else []

    def view_outputs(view: ViewData, families: str, note: str = ""):
        """Values of: state, image, facts, QA table, question picker, status."""
        choices = logic.question_choices(view)
        return (
            view,
            logic.annotated_image(view),
            logic.scene_facts_markdown(view),
            logic.qa_rows(view, families) or [["", "(no question: no kept kart in this view)", ""]],
            gr.update(choices=choices, value=None),
            note,
        )

    no_change = (gr.update(),) * 5

    first_frames = frame_choices(first_split)
    first_frame = first_frames[0][1] if first_frames else None
    initial: ViewData | None = None
    initial_note = ""
    try:
        initial = source.view(first_split, first_frame, views_of(first_split, first_frame)[0])
    except AppError as err:
        initial_note = _message(err)

    with gr.Blocks(title="stk-vqa app", analytics_enabled=False) as demo:
        model_line = f"`{config.model or 'the adapter’s base'}`" + "".join(
            f" + adapter `{a.split('=', 1)[0] if '=' in a else a}`" for a in config.adapters
        )
        bundled = Path(config.data).resolve() == logic.BUNDLED_SAMPLE.resolve()
        data_line = "the bundled sample" if bundled else f"`{config.data}`"
        gr.Markdown(
            f"# {TITLE}\n"
            f"data {data_line} ({'frames + info.json' if source.kind == 'frames' else 'DatasetDict'}) · "
            f"models {model_line}"
            + "".join(f"  \n*{n.split(': ', 1)[1]}*" for n in config.notes if n.startswith("models: ")),
            elem_id="stk-header",
        )
        state = gr.State(initial)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Row():
                    split_dd = gr.Dropdown(splits, value=first_split, label="split", scale=1, min_width=120)
                    frame_dd = gr.Dropdown(first_frames, value=first_frame, label="frame · track",
                                           elem_id="frame-dropdown", scale=2, min_width=200)  # fmt: skip
                    view_radio = gr.Radio(views_of(first_split, first_frame) if first_frame else [0],
                                          value=0, label="view (camera)", elem_id="view-radio", scale=3,
                                          min_width=260)  # fmt: skip
                image = gr.Image(
                    value=logic.annotated_image(initial) if initial else None, type="pil", interactive=False,
                    label="the view: ego kart red, other kept karts green, dropped karts grey", height=400,
                    elem_id="view-image",
                )  # fmt: skip
                status = gr.Markdown(initial_note, elem_id="view-status", elem_classes="stk-status")
                with gr.Accordion("Upload an image and/or its info.json", open=False, elem_id="upload"):
                    with gr.Row():
                        up_image = gr.File(label="image (150x100 or 600x400)", elem_id="upload-image")
                        up_info = gr.File(label="<frame>_info.json", elem_id="upload-info")
                    with gr.Row():
                        up_view = gr.Number(value=0, precision=0, label="view index", minimum=0)
                        up_button = gr.Button("Show the upload", elem_id="upload-button")
            with gr.Column(scale=6):
                with gr.Tabs():
                    with gr.Tab("Frames", id="frames"):
                        facts = gr.Markdown(
                            logic.scene_facts_markdown(initial) if initial else "", elem_id="scene-facts"
                        )
                    with gr.Tab("Questions", id="questions"):
                        families = gr.Radio(["default", "all"], value="default", label="question families",
                                            info="default: the course's; all: with the extensions")  # fmt: skip
                        qa_table = gr.Dataframe(
                            logic.qa_rows(initial) if initial else [], headers=["family", "question", "answer"],
                            interactive=False, wrap=True, label="QA pairs of this view", elem_id="qa-table",
                            column_widths=["22%", "58%", "20%"],
                        )  # fmt: skip
                        rows_df = gr.Dataframe(
                            rows_table(first_split), headers=["row", "frame", "view", "track", "family", "question",
                                                              "answer"],
                            interactive=False, wrap=True, label="every row of the split (DatasetDict)", max_height=400,
                            visible=source.kind == "dataset", elem_id="rows-table",
                            column_widths=["7%", "9%", "7%", "12%", "15%", "35%", "15%"],
                        )  # fmt: skip
                    with gr.Tab("Ask", id="ask"):
                        pick = gr.Dropdown(
                            logic.question_choices(initial) if initial else [], value=None,
                            label="a question of this view (any family), or type your own below", elem_id="pick",
                        )  # fmt: skip
                        with gr.Row():
                            question = gr.Textbox(label="question", placeholder="What kart is the ego car?", scale=4,
                                                  elem_id="question")  # fmt: skip
                            ask_button = gr.Button("Ask base + adapters", variant="primary", scale=1,
                                                   elem_id="ask-button")  # fmt: skip
                        answers = gr.Markdown("", elem_id="answers")
                        with gr.Row():
                            family_dd = gr.Dropdown(logic.family_choices(), value="all", label="family", scale=3)
                            run_button = gr.Button("Run the family on this view", scale=1, elem_id="run-family")
                        family_out = gr.Markdown("", elem_id="family-run")
                        with gr.Accordion("Models", open=False, elem_id="models"):
                            models_md = gr.Markdown(bank.describe_markdown(), elem_id="models-state")
                            model_box = gr.Textbox(value=config.model or "", label="base model (folder or Hub id)",
                                                   elem_id="model-box")  # fmt: skip
                            adapters_box = gr.Textbox(value="\n".join(config.adapters), lines=2, elem_id="adapters-box",
                                                      label="adapters, one per line (name=path or a Hub id)")  # fmt: skip
                            load_button = gr.Button("Load these models", elem_id="load-models")
                    with gr.Tab("Report", id="report"):
                        with gr.Row():
                            report_box = gr.Textbox(value=config.report or "", scale=4, elem_id="report-box",
                                                    label="evaluation folder (report.md, results.json, the chart)")  # fmt: skip
                            report_button = gr.Button("Open", scale=1, elem_id="report-button")
                        report_status = gr.Markdown("", elem_classes="stk-status", elem_id="report-status")
                        report_title = gr.Markdown("")
                        report_table = gr.Dataframe(interactive=False, label="accuracy per family: exact (course rule)",
                                                    elem_id="report-table")  # fmt: skip
                        report_chart = gr.Image(type="filepath", interactive=False, label="accuracy_by_family.png")
                        with gr.Accordion("report.md", open=False):
                            report_md = gr.Markdown("")

        view_targets = [state, image, facts, qa_table, pick, status]

        def show_view(split, frame_key, view_index, fams):
            try:
                return view_outputs(source.view(split, frame_key, int(view_index or 0)), fams)
            except Exception as err:  # noqa: BLE001  (a message in the page, never a traceback)
                return (gr.update(), *no_change[:4], _message(err))

        def on_split(split, fams):
            try:
                choices = frame_choices(split)
                key = choices[0][1]
                views = views_of(split, key)
                return (gr.update(choices=choices, value=key), gr.update(choices=views, value=views[0]),
                        rows_table(split), *show_view(split, key, views[0], fams))  # fmt: skip
            except Exception as err:  # noqa: BLE001
                return (gr.update(), gr.update(), gr.update(), gr.update(), *no_change[:4], _message(err))

        def on_frame(split, frame_key, fams):
            try:
                views = views_of(split, frame_key)
            except Exception as err:  # noqa: BLE001
                return (gr.update(), gr.update(), *no_change[:4], _message(err))
            return (gr.update(choices=views, value=views[0]), *show_view(split, frame_key, views[0], fams))

        def on_upload(image_path, info_path, view_index, fams):
            try:
                return view_outputs(logic.view_from_upload(image_path, info_path, view_index), fams,
                                    "showing the upload")  # fmt: skip
            except Exception as err:  # noqa: BLE001
                return (gr.update(), *no_change[:4], _message(err))

        def on_families(view, fams):
            return logic.qa_rows(view, fams) if view is not None else []

        def on_ask(view, text):
            try:
                if view is None:
                    raise AppError("pick a frame first")
                return logic.ask_markdown(logic.ask(bank, view, text)), bank.describe_markdown()
            except Exception as err:  # noqa: BLE001
                return _message(err), bank.describe_markdown()

        def on_run_family(view, family):
            try:
                if view is None:
                    raise AppError("pick a frame first")
                return logic.family_run_markdown(logic.run_family(bank, view, family)), bank.describe_markdown()
            except Exception as err:  # noqa: BLE001
                return _message(err), bank.describe_markdown()

        def on_load_models(model, adapters_text):
            bank.configure(model.strip() or None, [a.strip() for a in adapters_text.splitlines() if a.strip()])
            try:
                bank.get()
                return bank.describe_markdown()
            except Exception as err:  # noqa: BLE001
                return f"{_message(err)}\n\n{bank.describe_markdown()}"

        def on_report(folder):
            try:
                rep = logic.open_report(folder)
                table = gr.update(value=rep.rows, headers=rep.header)
                return "", f"**{rep.title}**  \n`{rep.folder}`", table, rep.chart, rep.markdown
            except Exception as err:  # noqa: BLE001
                return _message(err), "", gr.update(value=[]), None, ""

        split_dd.input(on_split, [split_dd, families], [frame_dd, view_radio, rows_df, *view_targets])
        frame_dd.input(on_frame, [split_dd, frame_dd, families], [view_radio, *view_targets])
        view_radio.input(show_view, [split_dd, frame_dd, view_radio, families], view_targets)
        up_button.click(on_upload, [up_image, up_info, up_view, families], view_targets)
        families.input(on_families, [state, families], qa_table)
        pick.input(lambda q: q or "", pick, question)
        ask_button.click(on_ask, [state, question], [answers, models_md])
        question.submit(on_ask, [state, question], [answers, models_md])
        run_button.click(on_run_family, [state, family_dd], [family_out, models_md])
        load_button.click(on_load_models, [model_box, adapters_box], models_md)
        report_button.click(on_report, report_box, [report_status, report_title, report_table, report_chart, report_md])
        if config.report:
            demo.load(on_report, report_box, [report_status, report_title, report_table, report_chart, report_md])
    demo.stk_bank = bank  # for tests and scripts
    return demo


def app(options: AppOptions) -> None:
    """``stk-vqa app``: with no flags the bundled sample, and after ``make quickstart`` its tiny model, adapter and
    report (``outputs/quickstart/``); otherwise SmolVLM-256M-Instruct, loaded when the first question is asked.
    Needs the ``app`` extra. Serves on this machine only unless ``--server_name`` says otherwise."""
    _gradio()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = logic.resolve_config(options.data, options.model, options.adapters, options.report)
    for note in config.notes:
        print(note)
    launch(build_app(config, device=options.device), options.server_name, options.server_port)


def launch(demo, server_name: str = "127.0.0.1", server_port: int | None = 7860, prevent_thread_lock: bool = False):
    """Serve the page (never through a public share link); returns Gradio's ``(app, local_url, share_url)``."""
    return demo.launch(server_name=server_name, server_port=server_port, share=False, theme=theme(), css=CSS,
                       ssr_mode=False, show_error=False, prevent_thread_lock=prevent_thread_lock)  # fmt: skip
