"""Build a Hub-ready stk-vqa DatasetDict (same as ``stk-vqa build``).

    python scripts/build_dataset.py --data_dir data --out_dir outputs/stk_vqa_dataset --splits train,valid
    python scripts/build_dataset.py my_build.yaml        # the fields of stk_vqa.dataset_builder.BuildConfig
"""

import sys

from transformers import HfArgumentParser

from stk_vqa.dataset_builder import BuildConfig, build


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(BuildConfig)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (config,) = parser.parse_yaml_file(argv[0], allow_extra_keys=False)
    else:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
    build(config)


if __name__ == "__main__":
    main()
