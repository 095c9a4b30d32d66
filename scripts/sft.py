#!/usr/bin/env python
"""Fine-tune SmolVLM on an stk-vqa dataset with TRL's SFTTrainer (LoRA / QLoRA).

    accelerate launch scripts/sft.py recipes/smolvlm_lora.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml scripts/sft.py recipes/smolvlm_lora.yaml
    python scripts/sft.py --config recipes/smoke_cpu.yaml --max_steps 5     # any recipe field can be overridden

The logic lives in stk_vqa.training (recipe parsing, data, model, trainer); see the README's Training section.
"""

from stk_vqa.training import main

if __name__ == "__main__":
    main()
