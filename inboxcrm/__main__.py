"""``python -m inboxcrm``: the same command line as the ``inboxcrm`` script."""
from .cli import main

main(prog_name="inboxcrm")
