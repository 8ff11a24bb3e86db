"""tagserve training pipeline.

download -> preprocess -> check_data -> segregate -> train -> evaluate
"""

STEPS = ("download", "preprocess", "check_data", "segregate", "train", "evaluate")
