#!/usr/bin/env python
"""Build a Hub-ready stk-vqa DatasetDict (the same as ``stk-vqa build``).

python scripts/build_dataset.py --data_dir data --out_dir outputs/stk_vqa_dataset --splits train,valid
python scripts/build_dataset.py my_build.yaml --seed 1     # the fields of stk_vqa.data.configs.BuildConfig
"""

from stk_vqa.cli import main

if __name__ == "__main__":
    import sys

    main(["build", *sys.argv[1:]])
