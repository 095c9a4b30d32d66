"""``stk-vqa app``: browse the data and ask the models, in the browser.

:mod:`stk_vqa.app.logic` holds the app's plain functions (no Gradio import, testable without a browser);
:mod:`stk_vqa.app.ui` only wires them into a Gradio page (Gradio comes with the ``app`` extra:
``pip install -e '.[app]'``).
"""
