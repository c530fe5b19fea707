"""Sub-commands of the article's later chapters, one module each.

Each module has ``register(sub)``, which adds its sub-commands to the parser
of `cli.py`, and is listed in ``cli.CHAPTER_COMMANDS``. Commands raise
``cli.UserError`` for bad input (one line on stderr, exit status 2).
"""
