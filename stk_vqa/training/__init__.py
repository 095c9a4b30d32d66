"""Training: LoRA / QLoRA fine-tuning of SmolVLM with TRL's ``SFTTrainer``, run by ``scripts/sft.py``.

One module, one job:

* :mod:`.configs`: the recipe's dataclasses (``StkScriptArguments`` + TRL's ``SFTConfig`` / ``ModelConfig``), the
  ``TrlParser`` and the recipe checks;
* :mod:`.data`: the training DatasetDict;
* :mod:`.model_utils`: model + processor as the recipe asks, image tokens, the LoRA config;
* :mod:`.trainer`: ``StkSFTTrainer`` and the input-path / row-recording switches;
* :mod:`.collators`: wrappers around TRL's vision-language collator;
* :mod:`.vision_features`: encode each distinct image of a batch once (in-batch reuse);
* :mod:`.feature_cache`: the offline vision-feature cache (encode each image of the dataset once);
* :mod:`.preprocess`: rows tokenised once, the padding collator, the image-grouping sampler;
* :mod:`.image_transforms`: the processor's image resize + normalise as torch ops on the device;
* :mod:`.artifacts`: loss curve, ``recipe.yaml``, model card section, checkpoints.

The run itself (parse -> data -> model -> LoRA -> trainer -> train / save / push) reads top to bottom in
``scripts/sft.py`` (the package's :mod:`stk_vqa.scripts.sft`).
"""
