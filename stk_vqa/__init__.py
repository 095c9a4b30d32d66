"""stk-vqa: SuperTuxKart visual question answering with the Hugging Face ecosystem.

Data flows one way: ``<frame>_info.json`` -> :mod:`stk_vqa.data.scene` -> :mod:`stk_vqa.data.questions`
-> rows -> ``DatasetDict`` (:mod:`stk_vqa.data.builder`) -> trainer (:mod:`stk_vqa.training`)
-> adapter -> evaluation report (:mod:`stk_vqa.evaluation`).
"""

__version__ = "0.1.0"
