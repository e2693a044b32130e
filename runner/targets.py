"""The `_target_`s a config may name: instantiating any other would be running arbitrary code."""

ALLOWED_TARGET_PREFIXES = ("models.",)  # model builders, in the project's models/ package
EVALUATE_PREFIXES = ("runner.mnist.report.", "runner.vqa.report.")  # in-run reports
