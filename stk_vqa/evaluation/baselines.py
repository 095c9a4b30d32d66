"""The blind prior: answer every question with the most frequent training answer of its template.

It never looks at the image, so it is the score a model gets from the question text and the label
distribution alone. A template unseen in training falls back to its family's most frequent answer, then to
the most frequent answer overall.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .metrics import majority


@dataclass(frozen=True)
class BlindPrior:
    by_template: dict[str, str]
    by_family: dict[str, str]
    overall: str
    n_train: int

    @classmethod
    def fit(cls, qa: Iterable[tuple[str, str, str]]) -> BlindPrior:
        """From ``(template, family, answer)`` triples (see :func:`stk_vqa.evaluation.items.training_qa`)."""
        templates, families, answers = defaultdict(list), defaultdict(list), []
        for template, family, answer in qa:
            templates[template].append(answer)
            families[family].append(answer)
            answers.append(answer)
        if not answers:
            raise ValueError("the blind prior needs at least one training answer")
        return cls(
            by_template={t: majority(a) for t, a in templates.items()},
            by_family={f: majority(a) for f, a in families.items()},
            overall=majority(answers),
            n_train=len(answers),
        )

    def predict(self, template: str, family: str) -> str:
        if template in self.by_template:
            return self.by_template[template]
        return self.by_family.get(family, self.overall)
