"""``python -m inboxcrm``: the same command line as the ``inboxcrm`` script."""
from inboxcrm.cli import main

main(prog_name="inboxcrm")
