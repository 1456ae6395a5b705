"""One module per stage: load what the previous stage wrote, call the core, write artifacts, summarise.

Nothing here parses the command line; `src/stage.py` does that and calls `run(...)`.
"""
