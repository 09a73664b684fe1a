"""Click commands of this package; ``weakalign.pipeline.cli`` adds every one in ``COMMANDS``."""

COMMANDS: list = []
